//! User-defined scalar functions, as the IR sees them: something [`Callable`] behind a
//! [`FunctionId`]. The IR neither knows nor cares that a function is WebAssembly; the runtime
//! that implements [`Callable`] lives outside this crate.
//!
//! A [`FunctionRegistry`] is one database's functions by id: a handle (cheap to clone) that the
//! database registers its functions in and the engine binds plans with. A plan names a function
//! by id only (`Expr::Udf`), so it can be printed, compared and shipped; binding it
//! ([`crate::Plan::bind_functions`]) puts the function itself beside the id, so a call on a
//! dataflow's per-row path takes no lock, looks nothing up and touches no shared count.

use crate::error::EvalError;
use crate::value::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A function's id, unique within its registry.
pub type FunctionId = u64;

/// A user-defined function.
pub trait Callable: Send + Sync + std::fmt::Debug {
    /// Calls the function on one row's arguments.
    fn call(&self, args: &[Value]) -> Result<Value, EvalError>;

    /// Calls the function on `rows` rows of arguments, stored one row after another in `args`,
    /// pushing one result per row onto `results`. The default calls [`Callable::call`] per row.
    fn call_batch(&self, rows: usize, args: &[Value], results: &mut Vec<Result<Value, EvalError>>) {
        let arity = args.len().checked_div(rows).unwrap_or(0);
        results.extend((0..rows).map(|row| self.call(&args[row * arity..(row + 1) * arity])));
    }
}

/// One database's functions by id. Clones share the same functions.
#[derive(Clone, Debug, Default)]
pub struct FunctionRegistry {
    functions: Arc<RwLock<Registered>>,
}

#[derive(Debug, Default)]
struct Registered {
    next_id: FunctionId,
    by_id: HashMap<FunctionId, Arc<dyn Callable>>,
}

impl FunctionRegistry {
    /// Registers `callable` under a new id.
    pub fn register(&self, callable: Arc<dyn Callable>) -> FunctionId {
        let mut registered = self.write();
        registered.next_id += 1;
        let id = registered.next_id;
        registered.by_id.insert(id, callable);
        id
    }

    /// Removes the function `id`: plans bound from now on cannot call it (plans bound before
    /// keep the function they were bound to).
    pub fn unregister(&self, id: FunctionId) {
        self.write().by_id.remove(&id);
    }

    /// The function `id`, if it is registered.
    pub fn get(&self, id: FunctionId) -> Option<Arc<dyn Callable>> {
        self.functions.read().unwrap_or_else(|poisoned| poisoned.into_inner()).by_id.get(&id).cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registered> {
        self.functions.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A function as a bound expression holds it: compared, hashed and printed by its id.
#[derive(Clone)]
pub struct BoundFunction(pub Arc<dyn Callable>);

impl std::fmt::Debug for BoundFunction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("bound")
    }
}

/// Bound or not, two calls of the same function id are the same call.
impl PartialEq for BoundFunction {
    fn eq(&self, _: &BoundFunction) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Constant(i64);

    impl Callable for Constant {
        fn call(&self, _args: &[Value]) -> Result<Value, EvalError> {
            Ok(Value::Int(self.0))
        }
    }

    #[test]
    fn registries_are_separate_and_a_removed_function_is_gone() {
        let registry = FunctionRegistry::default();
        let first = registry.register(Arc::new(Constant(1)));
        let second = registry.register(Arc::new(Constant(2)));
        assert_ne!(first, second);
        assert_eq!(registry.get(first).unwrap().call(&[]).unwrap(), Value::Int(1));
        assert_eq!(registry.clone().get(second).unwrap().call(&[]).unwrap(), Value::Int(2));
        registry.unregister(first);
        assert!(registry.get(first).is_none());
        assert!(FunctionRegistry::default().get(second).is_none(), "another registry has none of them");
    }
}
