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

use crate::invocation::{dag_cbor_cid, encode, parse_cid, ContentError};
use cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::BTreeMap;

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

/// Reads DAG-JSON text as IPLD: `{"/": "<cid>"}` is a link, `{"/": {"bytes": "<base64>"}}` bytes,
/// a number that fits a 64-bit integer an integer and any other number a float.
pub fn dag_json(text: &str) -> Result<Ipld, WorkflowError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|error| WorkflowError::Document(format!("not JSON: {error}")))?;
    json_to_ipld(&json).map_err(WorkflowError::Document)
}

fn json_to_ipld(json: &serde_json::Value) -> Result<Ipld, String> {
    use serde_json::Value as Json;
    Ok(match json {
        Json::Null => Ipld::Null,
        Json::Bool(value) => Ipld::Bool(*value),
        Json::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(integer), _) => Ipld::Integer(i128::from(integer)),
            (None, Some(integer)) => Ipld::Integer(i128::from(integer)),
            (None, None) => Ipld::Float(number.as_f64().ok_or_else(|| format!("number {number} is not a float64"))?),
        },
        Json::String(text) => Ipld::String(text.clone()),
        Json::Array(items) => Ipld::List(items.iter().map(json_to_ipld).collect::<Result<_, _>>()?),
        Json::Object(entries) => {
            if let Some(special) = entries.get("/").filter(|_| entries.len() == 1) {
                return match special {
                    Json::String(text) => {
                        Ok(Ipld::Link(parse_cid(text).map_err(|error| format!("link {{\"/\": {text:?}}}: {error}"))?))
                    }
                    Json::Object(inner) if inner.len() == 1 => match inner.get("bytes") {
                        Some(Json::String(encoded)) => Ok(Ipld::Bytes(base64_decode(encoded).ok_or_else(|| {
                            format!("bytes {{\"/\": {{\"bytes\": {encoded:?}}}}} are not unpadded base64")
                        })?)),
                        _ => Err("a map with the single key \"/\" must hold a CID or {\"bytes\": ...}".to_string()),
                    },
                    _ => Err("a map with the single key \"/\" must hold a CID or {\"bytes\": ...}".to_string()),
                };
            }
            Ipld::Map(
                entries
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), json_to_ipld(value)?)))
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

/// Standard base64 without padding (DAG-JSON's bytes), padding tolerated.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (index, byte) in chunk.iter().enumerate() {
            bits |= digit(*byte)? << (18 - 6 * index);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Parses a workflow document and names its tasks and itself.
pub fn parse_workflow(text: &str) -> Result<Workflow, WorkflowError> {
    let document = dag_json(text)?;
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
    fn dag_json_reads_links_bytes_and_numbers() {
        assert_eq!(dag_json(r#"{"/": {"bytes": "aGk"}}"#).unwrap(), Ipld::Bytes(b"hi".to_vec()));
        assert_eq!(dag_json("18446744073709551615").unwrap(), Ipld::Integer(i128::from(u64::MAX)));
        assert_eq!(dag_json("18446744073709552000").unwrap(), Ipld::Float(18446744073709552000.0));
        assert_eq!(dag_json("-3").unwrap(), Ipld::Integer(-3));
        assert_eq!(dag_json("1.5").unwrap(), Ipld::Float(1.5));
        assert!(dag_json(r#"{"/": 3}"#).is_err());
        assert!(matches!(
            dag_json(r#"{"/": "bafyrmihmxmsbt4n3g6dzmj7rho34mzfbaoqqbsfcq7etsogslqftbyj7du"}"#).unwrap(),
            Ipld::Link(_)
        ));
    }
}
