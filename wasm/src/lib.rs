//! weft's WebAssembly runtime for pure functions, on wasmtime.
//!
//! Calls are deterministic: NaNs are canonicalised, the guest gets no imports at all (no WASI,
//! so no clock, randomness, files or network) and no threads. Every call runs in a fresh
//! instance with a fuel budget and a memory cap, so a trap, an endless loop or a memory bomb
//! fails that call alone, and no call sees state another left. Modules are compiled once per
//! module CID.
//!
//! Speed without giving that up: each thread keeps a store for a few hundred calls (creating a
//! store and registering a module in it cost more than a small call); a module with no memory,
//! no table and no mutable global cannot carry state from one call to the next, so one
//! instance of it serves every call on that store; signatures are checked once per export, and
//! calls skip the per-call dynamic type check.
//!
//! ## ABI
//! - `BIGINT` is an `i64`, `DOUBLE` an `f64`, `BOOLEAN` an `i32` (0 or 1), in parameters and
//!   results alike.
//! - `TEXT` and `BYTEA` arguments are written into guest memory: the guest exports `memory` and
//!   `alloc(len: i32) -> i32`; the host calls `alloc`, copies the bytes there and passes the
//!   pair `(ptr: i32, len: i32)` in place of the argument.
//! - A `TEXT` or `BYTEA` result is returned as one `i64` holding `ptr << 32 | len` into the
//!   guest's memory (TEXT must be UTF-8).
//! - Functions are strict: a call with a NULL argument is not run and yields NULL.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::{Config, Engine, Instance, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Trap, Val, ValType};
use weft_ipvm::invocation::{module_cid, Invocation};
use weft_ir::{ColumnType, Value};

pub use weft_ipvm::invocation::Cid;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text is not valid WAT.
    #[error("invalid WebAssembly text: {0}")]
    Wat(String),
    /// The binary does not validate or compile.
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
}

/// Why a call failed. Each becomes an error receipt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The module exports no function of that name.
    #[error("module has no exported function {0}")]
    MissingExport(String),
    /// The export's parameter or result types are not the declared ones.
    #[error("signature mismatch: {0}")]
    Signature(String),
    /// The call used up its fuel (an outcome of the invocation: memoised).
    #[error("fuel exhausted after {0} units")]
    OutOfFuel(u64),
    /// The call grew its memory past the limit (an outcome: memoised).
    #[error("memory limit of {0} bytes exceeded")]
    OutOfMemory(usize),
    /// The module trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// The result could not be read as the declared type.
    #[error("bad result: {0}")]
    Result(String),
    /// Stopped at the wall-clock limit. Not an outcome of the invocation (a faster machine or a
    /// quieter moment may finish it), so it is never memoised.
    #[error("interrupted after {0} ms (the wall-clock limit of a call)")]
    Interrupted(u64),
}

/// Per-call budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel units (roughly Wasm instructions) a call may use.
    pub fuel: u64,
    /// Linear memory a call may grow to, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { fuel: 10_000_000, memory_bytes: 64 << 20 }
    }
}

/// A compiled module, pre-linked (with no imports) for fast instantiation, and its CID.
pub struct LoadedModule {
    /// The CID of the module's binary.
    pub cid: Cid,
    module: Module,
    pre: wasmtime::InstancePre<CallState>,
    /// Whether the module has no state an instance could carry from one call to the next (no
    /// memory, no mutable global, no table): one instance then serves many calls.
    stateless: bool,
    /// Exports already checked against a declared signature (checked once, not per call).
    checked: std::sync::RwLock<Vec<(String, Signature)>>,
}

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq)]
pub struct CallOutput {
    /// The result.
    pub value: Value,
    /// Fuel the call used.
    pub fuel: u64,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
    /// When the call started, in nanoseconds since the epoch.
    pub started_ns: i64,
}

/// The declared types of a function.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The parameters' types.
    pub params: Vec<ColumnType>,
    /// The result's type.
    pub result: ColumnType,
}

struct CallState {
    limits: StoreLimits,
}

/// A store kept by a thread for many calls: each call still gets a fresh instance (its own
/// memory, globals and tables, so no call sees another's state), but the store and the
/// module's registration in it are made once per [`RECYCLE_CALLS`] calls instead of per call.
/// Instances live as long as their store, so it is dropped after that many calls or once its
/// instances hold [`RECYCLE_MEMORY_BYTES`] of linear memory.
struct ReusedStore {
    store: Store<CallState>,
    calls: usize,
    memory_bytes: usize,
    /// The one instance of each stateless module (few: searched in order).
    stateless: Vec<StatelessInstance>,
}

/// The one instance of a stateless module in a store, with the exports called so far (looking
/// an export up by name is a large share of a small call's cost).
struct StatelessInstance {
    cid: Cid,
    instance: Instance,
    funcs: Vec<(Box<str>, wasmtime::Func)>,
}

/// `instant` in nanoseconds since the epoch: the system clock is read once per process, and
/// times are measured from there on the monotonic clock a call reads anyway.
fn epoch_ns(instant: Instant) -> i64 {
    static ANCHOR: std::sync::OnceLock<(Instant, i64)> = std::sync::OnceLock::new();
    let (anchor, anchor_ns) = *ANCHOR.get_or_init(|| {
        let now = std::time::SystemTime::now();
        let since = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as i64);
        (Instant::now(), since)
    });
    match instant.checked_duration_since(anchor) {
        Some(after) => anchor_ns + after.as_nanos() as i64,
        None => anchor_ns - anchor.duration_since(instant).as_nanos() as i64,
    }
}

/// Calls per reused store.
const RECYCLE_CALLS: usize = 256;
/// Linear memory a reused store may keep alive.
const RECYCLE_MEMORY_BYTES: usize = 32 << 20;

thread_local! {
    static STORES: std::cell::RefCell<Vec<ReusedStore>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The wall-clock limit of a call unless the runtime is given another.
pub const DEFAULT_CALL_LIMIT: std::time::Duration = std::time::Duration::from_millis(5_000);

/// How often the engine's epoch advances: the granularity of the wall-clock limit.
const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(5);

/// Compiles and runs pure Wasm functions.
pub struct Runtime {
    engine: Engine,
    modules: Mutex<HashMap<Cid, Arc<LoadedModule>>>,
    /// Epoch ticks a call may run for.
    deadline_ticks: u64,
    _ticker: EpochTicker,
}

/// Advances an engine's epoch every [`EPOCH_TICK`] on a thread of its own, until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (engine, stopped) = (engine.clone(), stop.clone());
        // Without the thread no call is ever interrupted by time; fuel still bounds it.
        let _ = std::thread::Builder::new().name("weft-wasm-epoch".into()).spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn wasm_types(column_type: ColumnType) -> Vec<ValType> {
    match column_type {
        ColumnType::BigInt | ColumnType::Timestamp => vec![ValType::I64],
        ColumnType::Double => vec![ValType::F64],
        ColumnType::Boolean => vec![ValType::I32],
        ColumnType::Text | ColumnType::Bytea => vec![ValType::I32, ValType::I32],
    }
}

fn result_type(column_type: ColumnType) -> ValType {
    match column_type {
        ColumnType::Double => ValType::F64,
        ColumnType::Boolean => ValType::I32,
        _ => ValType::I64,
    }
}

fn type_names(types: &[ValType]) -> String {
    types.iter().map(|value_type| value_type.to_string()).collect::<Vec<_>>().join(", ")
}

/// What is wrong with `source`, which is neither a binary module nor valid WAT text, without
/// quoting it: the bytes may be any file a statement named, and an error is shown to clients.
fn wat_error(source: &[u8], error: &wat::Error) -> String {
    let text = String::from_utf8_lossy(&source[..source.len().min(64)]);
    if !text.trim_start().starts_with('(') && !text.trim_start().starts_with(";;") {
        return "neither a WebAssembly binary (\\0asm) nor WAT text".into();
    }
    // The message and its location, without the quoted source line that follows them.
    let rendered = error.to_string();
    let mut lines = rendered.lines();
    let message = lines.next().unwrap_or_default();
    match lines.next().map(str::trim).and_then(|location| location.strip_prefix("--> ")) {
        Some(location) => format!("invalid WAT text: {message} (at {location})"),
        None => format!("invalid WAT text: {message}"),
    }
}

impl Runtime {
    /// A runtime with deterministic settings, calls limited to [`DEFAULT_CALL_LIMIT`].
    pub fn new() -> Runtime {
        Runtime::with_call_limit(DEFAULT_CALL_LIMIT)
    }

    /// A runtime whose calls are interrupted after `call_limit` of wall-clock time.
    pub fn with_call_limit(call_limit: std::time::Duration) -> Runtime {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.cranelift_nan_canonicalization(true);
        // Threads are compiled out (wasmtime without its `threads` feature).
        let engine = Engine::new(&config).expect("a valid wasmtime configuration");
        // One tick more than the limit: the epoch may advance just after the call starts.
        let deadline_ticks = call_limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        let ticker = EpochTicker::start(&engine);
        Runtime { engine, modules: Mutex::new(HashMap::new()), deadline_ticks, _ticker: ticker }
    }

    /// Loads a module from WAT text or a Wasm binary; the CID is of the binary. Compiled once
    /// per CID.
    pub fn load(&self, source: &[u8]) -> Result<Arc<LoadedModule>, LoadError> {
        let binary = wat::parse_bytes(source).map_err(|error| LoadError::Wat(wat_error(source, &error)))?;
        let cid = module_cid(&binary);
        if let Some(loaded) = self.modules.lock().expect("module cache").get(&cid) {
            return Ok(loaded.clone());
        }
        let module = Module::new(&self.engine, &binary).map_err(|error| LoadError::Invalid(format!("{error:#}")))?;
        let linker: Linker<CallState> = Linker::new(&self.engine);
        // Guests get no imports at all: a module that asks for any fails here.
        let pre = linker.instantiate_pre(&module).map_err(|error| LoadError::Invalid(format!("{error:#}")))?;
        let stateless = is_stateless(&binary);
        let loaded = Arc::new(LoadedModule { cid, module, pre, stateless, checked: Default::default() });
        self.modules.lock().expect("module cache").insert(cid, loaded.clone());
        Ok(loaded)
    }

    /// The weft type of an export's single result (`i64` as BIGINT, `f64` as DOUBLE, `i32` as
    /// BOOLEAN), if the module exports such a function.
    pub fn result_type(module: &LoadedModule, function: &str) -> Option<ColumnType> {
        let wasmtime::ExternType::Func(func) = module.module.get_export(function)? else {
            return None;
        };
        let results: Vec<ValType> = func.results().collect();
        match results.as_slice() {
            [ValType::I64] => Some(ColumnType::BigInt),
            [ValType::F64] => Some(ColumnType::Double),
            [ValType::I32] => Some(ColumnType::Boolean),
            _ => None,
        }
    }

    /// The invocation a call denotes (its CID is the memo key).
    pub fn invocation(module: &LoadedModule, function: &str, args: &[Value]) -> Invocation {
        Invocation { module: module.cid, function: function.to_string(), args: args.to_vec() }
    }

    /// Calls `function` of `module` on `args` with the declared `signature`.
    pub fn call(
        &self,
        module: &LoadedModule,
        function: &str,
        signature: &Signature,
        args: &[Value],
        limits: Limits,
    ) -> Result<CallOutput, CallError> {
        let started = Instant::now();
        if args.len() != signature.params.len() {
            return Err(CallError::Signature(format!(
                "{function} takes {} arguments, got {}",
                signature.params.len(),
                args.len()
            )));
        }
        if args.iter().any(Value::is_null) {
            return Ok(CallOutput { value: Value::Null, fuel: 0, duration_us: 0, started_ns: epoch_ns(started) });
        }
        let call_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(RECYCLE_CALLS + 1)
            .build();
        STORES.with(|stores| {
            let mut stores = stores.borrow_mut();
            let position = match stores.iter().position(|reused| Engine::same(reused.store.engine(), &self.engine)) {
                Some(position) => position,
                None => {
                    let state = CallState { limits: call_limits.clone() };
                    let mut store = Store::new(&self.engine, state);
                    store.limiter(|state| &mut state.limits);
                    stores.push(ReusedStore { store, calls: 0, memory_bytes: 0, stateless: Vec::new() });
                    stores.len() - 1
                }
            };
            let reused = &mut stores[position];
            reused.store.data_mut().limits = call_limits;
            let shared = if module.stateless {
                reused.stateless.iter().position(|stateless| stateless.cid == module.cid)
            } else {
                None
            };
            let (mut instance, mut func) = match shared {
                Some(position) => {
                    let stateless = &reused.stateless[position];
                    let func = stateless.funcs.iter().find(|(name, _)| **name == *function).map(|(_, func)| *func);
                    (Some(stateless.instance), func)
                }
                None => {
                    reused.calls += 1;
                    (None, None)
                }
            };
            let known = func.is_some();
            let result = self.run_instance(
                &mut reused.store,
                module,
                function,
                signature,
                args,
                limits,
                started,
                (&mut instance, &mut func),
            );
            let memory_bytes = match instance {
                Some(instance) if module.stateless => {
                    let position = shared.unwrap_or_else(|| {
                        reused.stateless.push(StatelessInstance { cid: module.cid, instance, funcs: Vec::new() });
                        reused.stateless.len() - 1
                    });
                    if let (false, Some(func)) = (known, func) {
                        reused.stateless[position].funcs.push((function.into(), func));
                    }
                    0
                }
                Some(instance) => {
                    instance.get_memory(&mut reused.store, "memory").map_or(0, |memory| memory.data_size(&reused.store))
                }
                None => 0,
            };
            reused.memory_bytes += memory_bytes;
            if reused.calls >= RECYCLE_CALLS || reused.memory_bytes >= RECYCLE_MEMORY_BYTES {
                stores.swap_remove(position);
            }
            result
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_instance(
        &self,
        store: &mut Store<CallState>,
        module: &LoadedModule,
        function: &str,
        signature: &Signature,
        args: &[Value],
        limits: Limits,
        started: Instant,
        (created, found): (&mut Option<Instance>, &mut Option<wasmtime::Func>),
    ) -> Result<CallOutput, CallError> {
        store.set_fuel(limits.fuel).expect("fuel is enabled");
        store.set_epoch_deadline(self.deadline_ticks);
        let fuel_used = |store: &Store<CallState>| limits.fuel - store.get_fuel().unwrap_or(0);
        let classify = |store: &Store<CallState>, error: wasmtime::Error| {
            if let Some(trap) = error.downcast_ref::<Trap>() {
                if *trap == Trap::OutOfFuel {
                    return CallError::OutOfFuel(fuel_used(store));
                }
                if *trap == Trap::Interrupt {
                    return CallError::Interrupted(started.elapsed().as_millis() as u64);
                }
            }
            let message = format!("{error:#}");
            if message.contains("memory") && (message.contains("limit") || message.contains("grow")) {
                return CallError::OutOfMemory(limits.memory_bytes);
            }
            CallError::Trap(message)
        };
        check_signature(module, function, signature)?;
        // A fresh instance, or the one instance of a stateless module.
        let instance = match *created {
            Some(instance) => instance,
            None => {
                let instance = module.pre.instantiate(&mut *store).map_err(|error| classify(store, error))?;
                *created = Some(instance);
                instance
            }
        };
        let func = match *found {
            Some(func) => func,
            None => {
                let func = instance
                    .get_func(&mut *store, function)
                    .ok_or_else(|| CallError::MissingExport(function.to_string()))?;
                *found = Some(func);
                func
            }
        };
        // The raw call skips the per-call dynamic type check (a large share of a small call's
        // cost); `check_signature` established above that the export's type is exactly these
        // parameters and one result, and no reference types are involved. Parameters go in a
        // buffer on the stack unless there are many.
        let width: usize = signature.params.iter().map(|param| wasm_types(*param).len()).sum();
        let mut inline = [wasmtime::ValRaw::i64(0); 8];
        let mut spilled = Vec::new();
        let raw: &mut [wasmtime::ValRaw] = if width <= inline.len() {
            &mut inline[..width.max(1)]
        } else {
            spilled.resize(width, wasmtime::ValRaw::i64(0));
            &mut spilled
        };
        let mut position = 0;
        let mut push = |value: wasmtime::ValRaw| {
            raw[position] = value;
            position += 1;
        };
        for (arg, column_type) in args.iter().zip(&signature.params) {
            match (arg, column_type) {
                (Value::Int(i), ColumnType::BigInt) | (Value::Timestamp(i), ColumnType::Timestamp) => {
                    push(wasmtime::ValRaw::i64(*i))
                }
                (Value::Float(f), ColumnType::Double) => push(wasmtime::ValRaw::f64(f.to_bits())),
                (Value::Int(i), ColumnType::Double) => push(wasmtime::ValRaw::f64((*i as f64).to_bits())),
                (Value::Bool(b), ColumnType::Boolean) => push(wasmtime::ValRaw::i32(i32::from(*b))),
                (Value::Text(_) | Value::Bytes(_), ColumnType::Text | ColumnType::Bytea) => {
                    let bytes = match arg {
                        Value::Text(text) => text.as_bytes(),
                        Value::Bytes(bytes) => bytes.as_slice(),
                        _ => unreachable!("matched above"),
                    };
                    let pointer = self.write_guest_bytes(store, &instance, bytes).map_err(|error| match error {
                        CallError::Trap(message) => CallError::Trap(message),
                        other => other,
                    })?;
                    push(wasmtime::ValRaw::i32(pointer));
                    push(wasmtime::ValRaw::i32(bytes.len() as i32));
                }
                (arg, column_type) => {
                    return Err(CallError::Signature(format!("argument {arg} is not a {column_type}")));
                }
            }
        }
        // SAFETY: `raw` holds every parameter with the function's exact types (checked) and has
        // room for its one result; the function belongs to `store`; there are no references.
        unsafe { func.call_unchecked(&mut *store, &mut *raw) }.map_err(|error| classify(store, error))?;
        let result = match result_type(signature.result) {
            ValType::F64 => Val::F64(raw[0].get_f64()),
            ValType::I32 => Val::I32(raw[0].get_i32()),
            _ => Val::I64(raw[0].get_i64()),
        };
        let value = match (signature.result, &result) {
            (ColumnType::BigInt, Val::I64(i)) => Value::Int(*i),
            (ColumnType::Timestamp, Val::I64(i)) => Value::Timestamp(*i),
            (ColumnType::Double, Val::F64(bits)) => Value::float(f64::from_bits(*bits)),
            (ColumnType::Boolean, Val::I32(i)) => Value::Bool(*i != 0),
            (ColumnType::Text | ColumnType::Bytea, Val::I64(packed)) => {
                let bytes = self.read_guest_bytes(store, &instance, *packed)?;
                if signature.result == ColumnType::Text {
                    Value::Text(
                        String::from_utf8(bytes)
                            .map_err(|_| CallError::Result("TEXT result is not UTF-8".into()))?
                            .into(),
                    )
                } else {
                    Value::Bytes(bytes)
                }
            }
            (_, other) => return Err(CallError::Result(format!("unexpected result {other:?}"))),
        };
        Ok(CallOutput {
            value,
            fuel: fuel_used(store),
            duration_us: started.elapsed().as_micros() as u64,
            started_ns: epoch_ns(started),
        })
    }

    fn write_guest_bytes(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        bytes: &[u8],
    ) -> Result<i32, CallError> {
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, "alloc")
            .map_err(|_| CallError::MissingExport("alloc (needed for TEXT and BYTEA arguments)".into()))?;
        let memory =
            instance.get_memory(&mut *store, "memory").ok_or_else(|| CallError::MissingExport("memory".into()))?;
        let pointer = alloc
            .call(&mut *store, bytes.len() as i32)
            .map_err(|error| CallError::Trap(format!("alloc: {error:#}")))?;
        memory
            .write(&mut *store, pointer as u32 as usize, bytes)
            .map_err(|_| CallError::Trap(format!("alloc returned {pointer}, outside memory")))?;
        Ok(pointer)
    }

    fn read_guest_bytes(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        packed: i64,
    ) -> Result<Vec<u8>, CallError> {
        let memory =
            instance.get_memory(&mut *store, "memory").ok_or_else(|| CallError::MissingExport("memory".into()))?;
        let pointer = (packed as u64 >> 32) as usize;
        let length = (packed as u64 & 0xffff_ffff) as usize;
        let data = memory.data(&*store);
        data.get(pointer..pointer.saturating_add(length))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| CallError::Result(format!("result ({pointer}, {length}) is outside memory")))
    }
}

/// Whether a (valid) module defines no memory, no table and no mutable global: nothing in
/// which one call could leave state for the next.
fn is_stateless(binary: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    for payload in Parser::new(0).parse_all(binary) {
        match payload {
            Ok(Payload::MemorySection(reader)) if reader.count() > 0 => return false,
            Ok(Payload::TableSection(reader)) if reader.count() > 0 => return false,
            Ok(Payload::ImportSection(reader)) if reader.count() > 0 => return false,
            Ok(Payload::GlobalSection(reader)) => {
                for global in reader {
                    if global.map_or(true, |global| global.ty.mutable) {
                        return false;
                    }
                }
            }
            Err(_) => return false,
            _ => {}
        }
    }
    true
}

/// Checks that `function` is an export of `module` with the Wasm types `signature` declares
/// (once per module, function and signature).
fn check_signature(module: &LoadedModule, function: &str, signature: &Signature) -> Result<(), CallError> {
    let checked = |(name, declared): &(String, Signature)| name == function && declared == signature;
    if module.checked.read().expect("signature cache").iter().any(checked) {
        return Ok(());
    }
    let Some(wasmtime::ExternType::Func(func_type)) = module.module.get_export(function) else {
        return Err(CallError::MissingExport(function.to_string()));
    };
    let expected_params: Vec<ValType> = signature.params.iter().flat_map(|param| wasm_types(*param)).collect();
    let expected_result = result_type(signature.result);
    let actual_params: Vec<ValType> = func_type.params().collect();
    let actual_results: Vec<ValType> = func_type.results().collect();
    let matches = actual_params.len() == expected_params.len()
        && actual_params.iter().zip(&expected_params).all(|(a, b)| ValType::eq(a, b))
        && actual_results.len() == 1
        && ValType::eq(&actual_results[0], &expected_result);
    if !matches {
        return Err(CallError::Signature(format!(
            "{function} is ({}) -> ({}) in the module, but declared ({}) -> ({expected_result})",
            type_names(&actual_params),
            type_names(&actual_results),
            type_names(&expected_params),
        )));
    }
    module.checked.write().expect("signature cache").push((function.to_string(), signature.clone()));
    Ok(())
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime::new()
    }
}
