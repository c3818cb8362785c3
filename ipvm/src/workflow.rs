//! IPVM workflows as Homestar writes them: a DAG-JSON document `{"tasks": [Task, ...]}` whose
//! tasks each run one instruction `{"rsc", "op", "input": {"func", "args"}, "nnc"}`, with limits
//! in `meta` (`fuel`, `memory` in bytes, `time` in milliseconds).
//!
//! An argument may be a *promise*: a map with one key, `await/ok`, `await/error` or `await/*`,
//! whose value links to the instruction it awaits. A task's instruction is named by the CID of
//! its DAG-CBOR (sha3-256), computed over the instruction *with its promises unresolved*, as
//! Homestar names it, so every task's CID is known before anything runs; the workflow is named
//! by the CID of the whole document's DAG-CBOR. JSON numbers that fit a 64-bit integer are
//! integers, others (a fuel of 18446744073709552000, say) are floats, as in Homestar's fixtures.

use crate::invocation::{
    dag_cbor_cid, dag_json, encode, ipld_to_value, parse_dag_json, value_to_ipld, ContentError, Outcome,
};
use cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::BTreeMap;
use weft_ir::Value;

/// Which outcome of the awaited instruction a promise stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promise {
    /// `await/ok`: the awaited receipt's ok value (the task fails if the awaited one failed).
    Ok,
    /// `await/error`: the awaited receipt's error (the task fails if the awaited one succeeded).
    Error,
    /// `await/*`: the whole outcome, `{"ok": v}` or `{"error": e}`.
    Any,
}

impl Promise {
    /// The promise a map key names, if it is one.
    pub fn from_key(key: &str) -> Option<Promise> {
        match key {
            "await/ok" => Some(Promise::Ok),
            "await/error" => Some(Promise::Error),
            "await/*" => Some(Promise::Any),
            _ => None,
        }
    }

    /// The map key that names the promise.
    pub fn key(self) -> &'static str {
        match self {
            Promise::Ok => "await/ok",
            Promise::Error => "await/error",
            Promise::Any => "await/*",
        }
    }
}

/// One argument of a task's call.
#[derive(Clone, Debug, PartialEq)]
pub enum Argument {
    /// A value given in the workflow.
    Given(Ipld),
    /// The outcome of another instruction, once it has a receipt.
    Awaits {
        /// Which part of the outcome.
        promise: Promise,
        /// The awaited instruction's CID.
        instruction: Cid,
    },
}

/// A task's limits (`meta`), as given: the runner clamps them to its own ceilings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TaskLimits {
    /// `meta.fuel` (a float beyond 64 bits saturates).
    pub fuel: Option<u64>,
    /// `meta.memory`, in bytes.
    pub memory_bytes: Option<u64>,
    /// `meta.time`, in milliseconds.
    pub time_ms: Option<u64>,
}

/// One task of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Its position in the workflow's `tasks`, from 0.
    pub position: usize,
    /// The CID of its instruction (promises unresolved).
    pub instruction: Cid,
    /// The resource: `ipfs://<module CID>` for `wasm/run`, a URL or `file:` path for effects.
    pub resource: String,
    /// The operation: `wasm/run`, `http/get`, `http/post`, `files/append`.
    pub op: String,
    /// The instruction's `input` map, as given.
    pub input: BTreeMap<String, Ipld>,
    /// `input.func`, for `wasm/run`.
    pub function: Option<String>,
    /// `input.args`, for `wasm/run`.
    pub args: Vec<Argument>,
    /// The instruction's nonce.
    pub nonce: String,
    /// Its limits.
    pub limits: TaskLimits,
}

impl Task {
    /// The instructions this task awaits, in argument order, each once.
    pub fn awaits(&self) -> Vec<Cid> {
        let mut awaited: Vec<Cid> = Vec::new();
        for argument in &self.args {
            if let Argument::Awaits { instruction, .. } = argument {
                if !awaited.contains(instruction) {
                    awaited.push(*instruction);
                }
            }
        }
        awaited
    }
}

/// A parsed workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// The CID of the document's DAG-CBOR.
    pub cid: Cid,
    /// Its tasks, in order.
    pub tasks: Vec<Task>,
}

/// Why a workflow was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The text is not JSON, or not DAG-JSON (a bad link, say).
    #[error("workflow: {0}")]
    Document(String),
    /// A task's field is missing or wrong.
    #[error("workflow task {task}: {field}: {message}")]
    Task {
        /// The task's position, from 0.
        task: usize,
        /// The field, as a path (`run.input.args[0]`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The document could not be encoded as DAG-CBOR.
    #[error("workflow: {0}")]
    Encoding(#[from] ContentError),
}

/// Where a task stands once the receipts it awaits are looked up.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Every argument has its value: the task may run.
    Ready(Vec<Value>),
    /// No receipt yet for these awaited instructions.
    Waiting(Vec<Cid>),
    /// The task cannot run (an awaited outcome is not the promised one, or a given argument has
    /// no weft value); it fails with this message.
    Failed(String),
}

/// Resolves a task's arguments: given values as they are, promises from the outcomes `outcome`
/// finds for the awaited instructions (`None`: no receipt yet). `await/ok` takes an ok value and
/// fails the task on an error; `await/error` takes an error's message (TEXT) and fails the task
/// on an ok value; `await/*` takes the whole outcome as JSON text, `{"ok": v}` or `{"error": e}`.
pub fn resolve(task: &Task, outcome: impl Fn(&Cid) -> Option<Outcome>) -> Resolution {
    let mut values = Vec::with_capacity(task.args.len());
    let mut waiting = Vec::new();
    for (index, argument) in task.args.iter().enumerate() {
        match argument {
            Argument::Given(ipld) => match ipld_to_value(ipld) {
                Ok(value) => values.push(value),
                Err(error) => return Resolution::Failed(format!("argument {index}: {error}")),
            },
            Argument::Awaits { promise, instruction } => match (promise, outcome(instruction)) {
                (_, None) => {
                    if !waiting.contains(instruction) {
                        waiting.push(*instruction);
                    }
                }
                (Promise::Ok, Some(Outcome::Ok(value))) => values.push(value),
                (Promise::Error, Some(Outcome::Error(message))) => values.push(Value::Text(message.as_str().into())),
                (Promise::Any, Some(outcome)) => values.push(Value::Text(outcome_text(&outcome).into())),
                (Promise::Ok, Some(Outcome::Error(message))) => {
                    return Resolution::Failed(format!(
                        "argument {index} awaits the ok value of {instruction}, which failed: {message}"
                    ))
                }
                (Promise::Error, Some(Outcome::Ok(value))) => {
                    return Resolution::Failed(format!(
                        "argument {index} awaits the error of {instruction}, which succeeded with {}",
                        dag_json(&value_to_ipld(&value))
                    ))
                }
            },
        }
    }
    if waiting.is_empty() {
        Resolution::Ready(values)
    } else {
        Resolution::Waiting(waiting)
    }
}

/// An outcome as the JSON text `await/*` passes: `{"ok": v}` (v as DAG-JSON) or `{"error": e}`.
fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(value) => serde_json::json!({ "ok": dag_json(&value_to_ipld(value)) }).to_string(),
        Outcome::Error(message) => serde_json::json!({ "error": message }).to_string(),
    }
}

/// Reads DAG-JSON text as IPLD (see [`parse_dag_json`]).
pub fn read_dag_json(text: &str) -> Result<Ipld, WorkflowError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|error| WorkflowError::Document(format!("not JSON: {error}")))?;
    parse_dag_json(&json).map_err(WorkflowError::Document)
}

/// Parses a workflow document and names its tasks and itself.
pub fn parse_workflow(text: &str) -> Result<Workflow, WorkflowError> {
    let document = read_dag_json(text)?;
    let Ipld::Map(top) = &document else {
        return Err(WorkflowError::Document("the document must be a map with \"tasks\"".into()));
    };
    let Some(Ipld::List(tasks)) = top.get("tasks") else {
        return Err(WorkflowError::Document("\"tasks\" must be a list of tasks".into()));
    };
    let tasks =
        tasks.iter().enumerate().map(|(position, task)| parse_task(position, task)).collect::<Result<_, _>>()?;
    Ok(Workflow { cid: dag_cbor_cid(&encode(&document)?), tasks })
}

fn parse_task(position: usize, task: &Ipld) -> Result<Task, WorkflowError> {
    let fail = |field: &str, message: String| WorkflowError::Task { task: position, field: field.to_string(), message };
    let Ipld::Map(task) = task else {
        return Err(fail("task", "must be a map with \"run\"".into()));
    };
    let run = task.get("run").ok_or_else(|| fail("run", "missing".into()))?;
    let Ipld::Map(instruction) = run else {
        return Err(fail("run", "must be a map {rsc, op, input, nnc}".into()));
    };
    let text = |field: &str| -> Result<String, WorkflowError> {
        match instruction.get(field) {
            Some(Ipld::String(value)) => Ok(value.clone()),
            Some(_) => Err(fail(&format!("run.{field}"), "must be a string".into())),
            None => Err(fail(&format!("run.{field}"), "missing".into())),
        }
    };
    let resource = text("rsc")?;
    let op = text("op")?;
    let nonce = match instruction.get("nnc") {
        None => String::new(),
        Some(Ipld::String(nonce)) => nonce.clone(),
        Some(_) => return Err(fail("run.nnc", "must be a string".into())),
    };
    let input = match instruction.get("input") {
        Some(Ipld::Map(input)) => input.clone(),
        Some(_) => return Err(fail("run.input", "must be a map".into())),
        None => return Err(fail("run.input", "missing".into())),
    };
    let function = match input.get("func") {
        None => None,
        Some(Ipld::String(function)) => Some(function.clone()),
        Some(_) => return Err(fail("run.input.func", "must be a string".into())),
    };
    let args = match input.get("args") {
        None => Vec::new(),
        Some(Ipld::List(args)) => args
            .iter()
            .enumerate()
            .map(|(index, arg)| {
                parse_argument(arg).map_err(|message| fail(&format!("run.input.args[{index}]"), message))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(fail("run.input.args", "must be a list".into())),
    };
    let limits = match task.get("meta") {
        None | Some(Ipld::Null) => TaskLimits::default(),
        Some(Ipld::Map(meta)) => {
            let limit = |field: &str| -> Result<Option<u64>, WorkflowError> {
                match meta.get(field) {
                    None | Some(Ipld::Null) => Ok(None),
                    Some(Ipld::Integer(value)) => u64::try_from(*value)
                        .map(Some)
                        .map_err(|_| fail(&format!("meta.{field}"), "must not be negative".into())),
                    // Beyond 64 bits (Homestar writes u64::MAX as a float): saturates.
                    Some(Ipld::Float(value)) if *value >= 0.0 => Ok(Some(*value as u64)),
                    Some(_) => Err(fail(&format!("meta.{field}"), "must be a non-negative number".into())),
                }
            };
            TaskLimits { fuel: limit("fuel")?, memory_bytes: limit("memory")?, time_ms: limit("time")? }
        }
        Some(_) => return Err(fail("meta", "must be a map".into())),
    };
    let instruction = dag_cbor_cid(&encode(run)?);
    Ok(Task { position, instruction, resource, op, input, function, args, nonce, limits })
}

fn parse_argument(arg: &Ipld) -> Result<Argument, String> {
    if let Ipld::Map(entries) = arg {
        let promises: Vec<(&String, Promise)> =
            entries.keys().filter_map(|key| Promise::from_key(key).map(|promise| (key, promise))).collect();
        if let Some((key, promise)) = promises.first() {
            if entries.len() != 1 {
                return Err(format!("a promise ({key}) must be the map's only key"));
            }
            return match &entries[*key] {
                Ipld::Link(instruction) => Ok(Argument::Awaits { promise: *promise, instruction: *instruction }),
                _ => Err(format!("{key} must link to an instruction: {{\"{key}\": {{\"/\": \"<CID>\"}}}}")),
            };
        }
    }
    Ok(Argument::Given(arg.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Homestar's own test fixture (homestar-runtime's workflow tests), as the issue gives it.
    const HOMESTAR_FIXTURE: &str = r#"{"tasks": [
      {"cause": null, "meta": {"fuel": 18446744073709552000, "memory": 4294967296, "time": 100000}, "prf": [],
       "run": {"input": {"args": [1], "func": "add_one"}, "nnc": "", "op": "wasm/run",
               "rsc": "ipfs://bafybeibk42jwhq7w2zcpe6q3wgtleugp3ymfs3pa5gerjmnakqihhqx4zq"}},
      {"cause": null, "meta": {"fuel": 18446744073709552000, "memory": 4294967296, "time": 100000}, "prf": [],
       "run": {"input": {"args": [{"await/ok": {"/": "bafyrmihmxmsbt4n3g6dzmj7rho34mzfbaoqqbsfcq7etsogslqftbyj7du"}}], "func": "add_one"},
               "nnc": "", "op": "wasm/run", "rsc": "ipfs://bafybeibk42jwhq7w2zcpe6q3wgtleugp3ymfs3pa5gerjmnakqihhqx4zq"}}
    ]}"#;

    #[test]
    fn homestar_fixture_tasks_have_homestar_instruction_cids() {
        let workflow = parse_workflow(HOMESTAR_FIXTURE).unwrap();
        assert_eq!(workflow.tasks.len(), 2);
        let first = &workflow.tasks[0];
        assert_eq!(first.instruction.to_string(), "bafyrmihmxmsbt4n3g6dzmj7rho34mzfbaoqqbsfcq7etsogslqftbyj7du");
        assert_eq!(first.function.as_deref(), Some("add_one"));
        assert_eq!(first.args, vec![Argument::Given(Ipld::Integer(1))]);
        assert_eq!(
            first.limits,
            TaskLimits { fuel: Some(u64::MAX), memory_bytes: Some(4294967296), time_ms: Some(100000) }
        );
        let second = &workflow.tasks[1];
        assert_eq!(second.awaits(), vec![first.instruction]);
        assert_eq!(second.args, vec![Argument::Awaits { promise: Promise::Ok, instruction: first.instruction }]);
        assert_ne!(second.instruction, first.instruction);
        // The workflow's CID is its document's: whitespace does not change it, content does.
        let compact: String = HOMESTAR_FIXTURE.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(parse_workflow(&compact).unwrap().cid, workflow.cid);
        assert_ne!(parse_workflow(&HOMESTAR_FIXTURE.replace("[1]", "[2]")).unwrap().cid, workflow.cid);
    }

    #[test]
    fn bad_workflows_are_refused_naming_the_task_and_field() {
        let task = |run: &str| {
            format!(
                r#"{{"tasks": [{{"run": {{"rsc": "ipfs://x", "op": "wasm/run", "nnc": "", "input": {{"func": "f", "args": [1]}}}}}}, {{"run": {run}}}]}}"#
            )
        };
        let error = |text: &str| parse_workflow(text).unwrap_err().to_string();
        assert!(error("{").contains("not JSON"));
        assert!(error(r#"{"tasks": 3}"#).contains("tasks"));
        let message = error(&task(r#"{"op": "wasm/run", "input": {}}"#));
        assert!(message.contains("task 1") && message.contains("run.rsc") && message.contains("missing"), "{message}");
        let message =
            error(&task(r#"{"rsc": "ipfs://x", "op": "wasm/run", "input": {"args": [{"await/ok": "bafy"}]}}"#));
        assert!(
            message.contains("task 1") && message.contains("run.input.args[0]") && message.contains("link"),
            "{message}"
        );
        let message = error(&task(
            r#"{"rsc": "ipfs://x", "op": "wasm/run", "input": {"args": [{"await/ok": {"/": "not-a-cid"}}]}}"#,
        ));
        assert!(message.contains("not-a-cid"), "{message}");
        let two_keys = r#"{"rsc": "ipfs://x", "op": "wasm/run", "input": {"args": [{"await/ok": {"/": "bafyrmihmxmsbt4n3g6dzmj7rho34mzfbaoqqbsfcq7etsogslqftbyj7du"}, "x": 1}]}}"#;
        assert!(error(&task(two_keys)).contains("only key"));
        assert!(error(&task(r#"{"rsc": "ipfs://x", "op": "wasm/run", "input": {}, "nnc": 3}"#)).contains("run.nnc"));
    }

    #[test]
    fn promises_resolve_from_outcomes_or_wait_or_fail() {
        let workflow = parse_workflow(HOMESTAR_FIXTURE).unwrap();
        let (first, second) = (&workflow.tasks[0], &workflow.tasks[1]);
        assert_eq!(resolve(first, |_| None), Resolution::Ready(vec![Value::Int(1)]));
        assert_eq!(resolve(second, |_| None), Resolution::Waiting(vec![first.instruction]));
        let ok = |cid: &Cid| (*cid == first.instruction).then_some(Outcome::Ok(Value::Int(2)));
        assert_eq!(resolve(second, ok), Resolution::Ready(vec![Value::Int(2)]));
        let failed = |_: &Cid| Some(Outcome::Error("trap: unreachable".into()));
        let Resolution::Failed(message) = resolve(second, failed) else { panic!("a failed await/ok fails the task") };
        assert!(message.contains(&first.instruction.to_string()) && message.contains("unreachable"), "{message}");
        let link = first.instruction.to_string();
        let with = |key: &str| {
            let text = HOMESTAR_FIXTURE.replace("await/ok", key);
            parse_workflow(&text).unwrap().tasks[1].clone()
        };
        assert_eq!(
            resolve(&with("await/error"), failed),
            Resolution::Ready(vec![Value::Text("trap: unreachable".into())])
        );
        assert!(matches!(resolve(&with("await/error"), ok), Resolution::Failed(message) if message.contains(&link)));
        assert_eq!(resolve(&with("await/*"), ok), Resolution::Ready(vec![Value::Text(r#"{"ok":2}"#.into())]));
        assert_eq!(
            resolve(&with("await/*"), failed),
            Resolution::Ready(vec![Value::Text(r#"{"error":"trap: unreachable"}"#.into())])
        );
    }

    #[test]
    fn dag_json_round_trips() {
        for text in [r#"{"/":{"bytes":"aGkh"}}"#, r#"{"/":{"bytes":"aGk"}}"#, r#"[1,-2,1.5,"x",null,true,{"a":[]}]"#] {
            assert_eq!(dag_json(&read_dag_json(text).unwrap()).to_string(), text);
        }
    }

    #[test]
    fn dag_json_reads_links_bytes_and_numbers() {
        assert_eq!(read_dag_json(r#"{"/": {"bytes": "aGk"}}"#).unwrap(), Ipld::Bytes(b"hi".to_vec()));
        assert_eq!(read_dag_json("18446744073709551615").unwrap(), Ipld::Integer(i128::from(u64::MAX)));
        assert_eq!(read_dag_json("18446744073709552000").unwrap(), Ipld::Float(18446744073709552000.0));
        assert_eq!(read_dag_json("-3").unwrap(), Ipld::Integer(-3));
        assert_eq!(read_dag_json("1.5").unwrap(), Ipld::Float(1.5));
        assert!(read_dag_json(r#"{"/": 3}"#).is_err());
        assert!(matches!(
            read_dag_json(r#"{"/": "bafyrmihmxmsbt4n3g6dzmj7rho34mzfbaoqqbsfcq7etsogslqftbyj7du"}"#).unwrap(),
            Ipld::Link(_)
        ));
    }
}
