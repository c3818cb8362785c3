//! User-defined scalar functions, as the engine sees them: a process-wide registry from
//! function id to something callable. The engine neither knows nor cares that a function is
//! WebAssembly; the runtime that implements [`Callable`] lives outside this crate.
//!
//! A call is on a dataflow's per-row path, so each thread keeps the functions it called in a
//! small cache, valid while no function was removed: a call then takes no lock, hashes nothing
//! and touches no shared reference count.

use crate::error::EvalError;
use crate::value::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Identifies a registered function in this process.
pub type FunctionId = u64;

/// A pure scalar function.
pub trait Callable: Send + Sync + std::fmt::Debug {
    /// Calls the function on one row's arguments.
    fn call(&self, args: &[Value]) -> Result<Value, EvalError>;

    /// Calls the function on `rows` rows of arguments, stored one row after another in `args`
    /// (each row has `args.len() / rows` values), pushing one result per row onto `results`,
    /// in order. A function whose calls share a cost (a lock, a lookup) implements it to pay
    /// that cost once per batch.
    fn call_batch(&self, rows: usize, args: &[Value], results: &mut Vec<Result<Value, EvalError>>) {
        let arity = args.len().checked_div(rows).unwrap_or(0);
        results.extend((0..rows).map(|row| self.call(&args[row * arity..(row + 1) * arity])));
    }
}

fn registry() -> &'static RwLock<HashMap<FunctionId, Arc<dyn Callable>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<FunctionId, Arc<dyn Callable>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers a function, returning its process-unique id.
pub fn register(callable: Arc<dyn Callable>) -> FunctionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry().write().expect("function registry").insert(id, callable);
    id
}

/// Counts removals: a thread's cache of functions is valid while it is unchanged (ids are never
/// reused, so a registration leaves every cache valid).
static REMOVALS: AtomicU64 = AtomicU64::new(0);

/// The functions a thread called, valid while [`REMOVALS`] is `removals`.
#[derive(Default)]
struct ThreadCache {
    removals: u64,
    functions: Vec<(FunctionId, Arc<dyn Callable>)>,
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::default();
}

/// Removes a function (its id is never reused).
pub fn unregister(id: FunctionId) {
    registry().write().expect("function registry").remove(&id);
    REMOVALS.fetch_add(1, Ordering::Release);
}

/// Calls function `id`.
pub fn call(id: FunctionId, args: &[Value]) -> Result<Value, EvalError> {
    with_function(id, |callable| callable.call(args))?
}

/// Calls function `id` on `rows` rows of arguments (see [`Callable::call_batch`]).
pub fn call_batch(
    id: FunctionId,
    rows: usize,
    args: &[Value],
    results: &mut Vec<Result<Value, EvalError>>,
) -> Result<(), EvalError> {
    with_function(id, |callable| callable.call_batch(rows, args, results))
}

/// Runs `logic` with function `id`, found in this thread's cache if it can be.
fn with_function<T>(id: FunctionId, logic: impl FnOnce(&dyn Callable) -> T) -> Result<T, EvalError> {
    let removals = REMOVALS.load(Ordering::Acquire);
    CACHE.with(|cache| {
        {
            let cached = cache.borrow();
            if cached.removals == removals {
                if let Some((_, callable)) = cached.functions.iter().find(|(cached_id, _)| *cached_id == id) {
                    return Ok(logic(callable.as_ref()));
                }
            }
        }
        let callable = registry().read().expect("function registry").get(&id).cloned();
        let Some(callable) = callable else {
            return Err(EvalError(format!("function {id} is no longer defined")));
        };
        // A function calling functions (none does today) would find the cache borrowed: it
        // then simply goes uncached.
        if let Ok(mut cached) = cache.try_borrow_mut() {
            if cached.removals != removals {
                *cached = ThreadCache { removals, functions: Vec::new() };
            }
            cached.functions.push((id, callable.clone()));
        }
        Ok(logic(callable.as_ref()))
    })
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
    fn a_removed_function_is_not_called_from_a_thread_that_cached_it() {
        let first = register(Arc::new(Constant(1)));
        let second = register(Arc::new(Constant(2)));
        assert_eq!(call(first, &[]).unwrap(), Value::Int(1));
        assert_eq!(call(second, &[]).unwrap(), Value::Int(2));
        unregister(first);
        let error = call(first, &[]).unwrap_err();
        assert!(error.0.contains("no longer defined"), "{error:?}");
        assert_eq!(call(second, &[]).unwrap(), Value::Int(2));
        let third = register(Arc::new(Constant(3)));
        assert_eq!(call(third, &[]).unwrap(), Value::Int(3));
        unregister(second);
        unregister(third);
    }
}
