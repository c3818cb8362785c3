//! The Wasm runtime on guests written as WAT in the tree: arithmetic, TEXT through guest memory,
//! and every failure a call can have (fuel, memory, trap, invalid module, missing export,
//! signature mismatch), each confined to its call.

use weft_ir::{ColumnType, Value};
use weft_wasm::{CallError, CallOutput, Limits, Runtime, Signature};

const MATH: &str = include_str!("../../examples/wasm/math.wat");
const TEXT: &str = include_str!("../../examples/wasm/text.wat");

const BOMBS: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "spin") (param i64) (result i64)
    (loop $forever (br $forever))
    i64.const 0)
  (func (export "grow") (param i64) (result i64)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  (func (export "boom") (param i64) (result i64)
    unreachable))
"#;

fn signature(params: &[ColumnType], result: ColumnType) -> Signature {
    Signature { params: params.to_vec(), result }
}

#[test]
fn numbers_and_text_cross_the_abi() {
    let runtime = Runtime::new();
    let math = runtime.load(MATH.as_bytes()).unwrap();
    let add_one = signature(&[ColumnType::BigInt], ColumnType::BigInt);
    let output = runtime.call(&math, "add_one", &add_one, &[Value::Int(42)], Limits::default()).unwrap();
    assert_eq!(output.value, Value::Int(43));
    assert!(output.fuel > 0);
    let half = signature(&[ColumnType::Double], ColumnType::Double);
    assert_eq!(
        runtime.call(&math, "half", &half, &[Value::float(3.0)], Limits::default()).unwrap().value,
        Value::float(1.5)
    );
    assert_eq!(runtime.call(&math, "add_one", &add_one, &[Value::Null], Limits::default()).unwrap().value, Value::Null);
    // The same source is the same module: compiled once, same CID.
    assert_eq!(runtime.load(MATH.as_bytes()).unwrap().cid, math.cid);
    assert!(math.cid.to_string().starts_with("bafkrei"));

    let text = runtime.load(TEXT.as_bytes()).unwrap();
    let slug = signature(&[ColumnType::Text], ColumnType::Text);
    let output =
        runtime.call(&text, "slug", &slug, &[Value::Text("Hello, World 42".into())], Limits::default()).unwrap();
    assert_eq!(output.value, Value::Text("hello--world-42".into()));
}

#[test]
fn every_failure_is_an_error_for_that_call_only() {
    let runtime = Runtime::new();
    let bombs = runtime.load(BOMBS.as_bytes()).unwrap();
    let unary = signature(&[ColumnType::BigInt], ColumnType::BigInt);
    let limits = Limits { fuel: 100_000, memory_bytes: 1 << 20 };
    assert!(matches!(runtime.call(&bombs, "spin", &unary, &[Value::Int(1)], limits), Err(CallError::OutOfFuel(_))));
    let grow = runtime.call(&bombs, "grow", &unary, &[Value::Int(1)], limits);
    assert_eq!(grow, Err(CallError::OutOfMemory(1 << 20)));
    assert!(matches!(runtime.call(&bombs, "boom", &unary, &[Value::Int(1)], limits), Err(CallError::Trap(_))));
    assert_eq!(
        runtime.call(&bombs, "nope", &unary, &[Value::Int(1)], limits),
        Err(CallError::MissingExport("nope".into()))
    );
    let wrong = signature(&[ColumnType::Double], ColumnType::BigInt);
    assert!(matches!(runtime.call(&bombs, "boom", &wrong, &[Value::float(1.0)], limits), Err(CallError::Signature(_))));
    assert!(runtime.load(b"(module (func (result i32) i64.const 1))").is_err(), "does not validate");
    assert!(runtime.load(b"(module (func").is_err(), "not WAT");
    let clock = runtime.load(b"(module (import \"wasi\" \"clock\" (func)))").err().expect("imports are refused");
    assert!(clock.to_string().contains("import"), "{clock}");
    // After all that, the runtime still runs calls.
    let math = runtime.load(MATH.as_bytes()).unwrap();
    assert_eq!(runtime.call(&math, "add_one", &unary, &[Value::Int(1)], limits).unwrap().value, Value::Int(2));
}

/// A guest that counts its calls in a mutable global and in memory: with a fresh instance per
/// call it must answer 1 every time.
const COUNTER: &str = r#"
(module
  (memory 1)
  (global $calls (mut i64) (i64.const 0))
  (func (export "count") (param i64) (result i64)
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    (i64.store (i32.const 8) (i64.add (i64.load (i32.const 8)) (i64.const 1)))
    (i64.add (global.get $calls) (i64.load (i32.const 8)))))
"#;

/// No memory, table or mutable global: one instance may serve every call.
const STATELESS_SPIN: &str = r#"
(module
  (global $one i64 (i64.const 1))
  (func (export "spin_if") (param i64) (result i64)
    (if (i64.eqz (local.get 0)) (then (loop $forever (br $forever))))
    (i64.add (local.get 0) (global.get $one))))
"#;

#[test]
fn calls_never_see_each_others_state_and_fuel_is_per_call() {
    let runtime = Runtime::new();
    let one = signature(&[ColumnType::BigInt], ColumnType::BigInt);
    let counter = runtime.load(COUNTER.as_bytes()).unwrap();
    for x in 0..600 {
        let output = runtime.call(&counter, "count", &one, &[Value::Int(x)], Limits::default()).unwrap();
        assert_eq!(output.value, Value::Int(2), "call {x} saw state left by another call");
    }
    // A stateless module keeps one instance; a call that runs out of fuel leaves nothing behind.
    let spin = runtime.load(STATELESS_SPIN.as_bytes()).unwrap();
    let limits = Limits { fuel: 10_000, ..Limits::default() };
    let first = runtime.call(&spin, "spin_if", &one, &[Value::Int(4)], limits).unwrap();
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    assert!((now_ns - first.started_ns).abs() < 10_000_000_000, "a call's start is on the system clock");
    for _ in 0..3 {
        let error = runtime.call(&spin, "spin_if", &one, &[Value::Int(0)], limits).unwrap_err();
        assert!(matches!(error, CallError::OutOfFuel(_)), "{error:?}");
        let again = runtime.call(&spin, "spin_if", &one, &[Value::Int(4)], limits).unwrap();
        assert!(again.started_ns >= first.started_ns, "calls start in order");
        let timing = CallOutput { duration_us: again.duration_us, started_ns: again.started_ns, ..first.clone() };
        assert_eq!(again, timing, "same value and fuel");
    }
    assert_eq!(runtime.call(&spin, "spin_if", &one, &[Value::Int(41)], limits).unwrap().value, Value::Int(42));
}

#[test]
fn a_call_is_interrupted_at_its_wall_clock_limit_and_the_runtime_goes_on() {
    let runtime = Runtime::with_call_limit(std::time::Duration::from_millis(50));
    let one = signature(&[ColumnType::BigInt], ColumnType::BigInt);
    let spin = runtime.load(STATELESS_SPIN.as_bytes()).unwrap();
    // Fuel enough for minutes: only the clock stops it.
    let limits = Limits { fuel: u64::MAX / 2, ..Limits::default() };
    for _ in 0..2 {
        let error = runtime.call(&spin, "spin_if", &one, &[Value::Int(0)], limits).unwrap_err();
        match error {
            CallError::Interrupted(after_ms) => assert!(after_ms >= 50, "interrupted after {after_ms} ms"),
            other => panic!("expected an interruption, got {other:?}"),
        }
        assert!(error.to_string().starts_with("interrupted after"));
        assert_eq!(runtime.call(&spin, "spin_if", &one, &[Value::Int(1)], limits).unwrap().value, Value::Int(2));
    }
}
