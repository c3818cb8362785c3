//! User-defined scalar functions, as the engine sees them: a process-wide registry from
//! function id to something callable. The engine neither knows nor cares that a function is
//! WebAssembly; the runtime that implements [`Callable`] lives outside this crate.

use crate::expr::EvalError;
use crate::value::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Identifies a registered function in this process.
pub type FunctionId = u64;

/// A pure scalar function.
pub trait Callable: Send + Sync + std::fmt::Debug {
    /// Calls the function on one row's arguments.
    fn call(&self, args: &[Value]) -> Result<Value, EvalError>;
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

/// Removes a function (its id is never reused).
pub fn unregister(id: FunctionId) {
    registry().write().expect("function registry").remove(&id);
}

/// Calls function `id`.
pub fn call(id: FunctionId, args: &[Value]) -> Result<Value, EvalError> {
    let callable = registry().read().expect("function registry").get(&id).cloned();
    match callable {
        Some(callable) => callable.call(args),
        None => Err(EvalError(format!("function {id} is no longer defined"))),
    }
}
