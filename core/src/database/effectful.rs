//! The database's sinks and sources: how view changes become mutation effects, and how source
//! reads become table changes.
//!
//! A sink subscribes to its view. After every commit, the view's consolidated changes at that
//! timestamp become one effect in the outbox before the commit returns (retractions first, then
//! by key). When a sink is installed (created, or after a restart) its view's contents are
//! compared with everything ever enqueued for it, and any difference becomes one more effect:
//! that is the initial snapshot of a new sink, and it closes the gap a crash between the
//! write-ahead log and the outbox would otherwise leave. A source's reads are applied to its
//! table as one transaction per ingestion; a snapshot read is applied as its difference from
//! the table's contents, so re-reading after a restart changes nothing that did not change.

use super::*;
use crate::connections::{column_type, columns_of, datum, value, EffectStatement, SinkDefinition, SourceDefinition};
use std::sync::mpsc::Receiver;
use weft_effects::{Batch, Effect, SourceRead, Stream};

/// A running sink.
pub(super) struct SinkState {
    pub(super) definition: SinkDefinition,
    /// The target's resource name (parsed once, not per effect).
    resource: String,
    key: Vec<usize>,
    changes: weft_engine::ChangeStream,
    /// Set when an effect could not be written to the outbox: the next commit reconciles.
    stale: bool,
}

/// A running source.
pub(super) struct SourceState {
    pub(super) definition: SourceDefinition,
    reads: Receiver<SourceRead>,
}

/// Sorts changes retractions first, then by key, then by row.
fn ordered(mut changes: Vec<(Row, i64)>, key: &[usize]) -> Vec<(Row, i64)> {
    changes.sort_by(|(left, left_diff), (right, right_diff)| {
        (*left_diff > 0)
            .cmp(&(*right_diff > 0))
            .then_with(|| key.iter().map(|k| &left[*k]).cmp(key.iter().map(|k| &right[*k])))
            .then_with(|| left.cmp(right))
    });
    changes
}

impl Database {
    pub(super) fn execute_effect_statement(&mut self, statement: EffectStatement) -> Result<Output, Error> {
        match statement {
            EffectStatement::Retry { cid } => {
                self.effects.executor.retry(&cid)?;
                return Ok(Output::Status("RETRY EFFECT".into()));
            }
            _ => self.refuse_ddl_in_transaction()?,
        }
        match statement {
            EffectStatement::CreateSink(mut definition) => {
                definition.epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.as_nanos() as u64);
                if self.effects.sinks.contains_key(&definition.name)
                    || self.effects.sources.contains_key(&definition.name)
                {
                    return catalog_error(format!("sink or source {} already exists", definition.name));
                }
                weft_connectors::check_target(&definition.target, self.access())
                    .map_err(crate::executor::ExecutorError::from)?;
                self.install_sink(definition.clone())?;
                if let Err(error) = self.wal.append(&[Record::CreateSink { definition: definition.clone() }]) {
                    self.effects.sinks.remove(&definition.name);
                    self.effects.executor.stop_sink(&definition.name, true)?;
                    return Err(error.into());
                }
                self.effects.executor.compact_if_large()?;
                Ok(Output::Status("CREATE SINK".into()))
            }
            EffectStatement::CreateSource(definition) => self.create_source(definition),
            EffectStatement::Drop { source, name, if_exists } => {
                let exists = if source {
                    self.effects.sources.contains_key(&name)
                } else {
                    self.effects.sinks.contains_key(&name)
                };
                let kind = if source { "source" } else { "sink" };
                if !exists {
                    return if if_exists {
                        Ok(Output::Status(format!("DROP {}", kind.to_uppercase())))
                    } else {
                        catalog_error(format!("{kind} {name} does not exist"))
                    };
                }
                if source {
                    let id = self.table(&name)?.id;
                    if let Some(dependent) = self.relations.values().find(|other| other.dependencies().contains(&id)) {
                        return catalog_error(format!(
                            "cannot drop source {name}: view {} depends on it",
                            dependent.name
                        ));
                    }
                    self.wal.append(&[Record::DropEffectful { name: name.clone() }, Record::Drop { id }])?;
                    self.effects.sources.remove(&name);
                    self.effects.executor.stop_source(&name);
                    self.uninstall(id)?;
                } else {
                    self.wal.append(&[Record::DropEffectful { name: name.clone() }])?;
                    self.effects.sinks.remove(&name);
                    self.effects.executor.stop_sink(&name, true)?;
                }
                Ok(Output::Status(format!("DROP {}", kind.to_uppercase())))
            }
            EffectStatement::Retry { .. } => unreachable!("handled above"),
        }
    }

    /// Subscribes the sink to its view, enqueues whatever the sink has not been sent yet, and
    /// starts its delivery.
    pub(super) fn install_sink(&mut self, definition: SinkDefinition) -> Result<(), Error> {
        let (columns, state) = self.view(&definition.view)?;
        let key = definition
            .key
            .iter()
            .map(|name| {
                columns.iter().position(|(column, _)| column == name).ok_or_else(|| {
                    Error::Catalog(format!("sink {}: view {} has no column {name}", definition.name, definition.view))
                })
            })
            .collect::<Result<Vec<usize>, Error>>()?;
        if definition.target.connector == "effects" {
            let column = &definition.target.arguments[0];
            if !columns
                .iter()
                .any(|(name, column_type)| name == column && *column_type == weft_engine::ColumnType::Text)
            {
                return catalog_error(format!(
                    "sink {}: view {} has no TEXT column {column} of effect descriptions",
                    definition.name, definition.view
                ));
            }
        }
        let subscription = {
            let _reading = self.read_gate().map(Gate::read);
            state.subscribe()?
        };
        let name = definition.name.clone();
        let target = definition.target.clone();
        let resource = target.resource().map_err(crate::executor::ExecutorError::from)?;
        let mut sink =
            SinkState { definition, resource, key: key.clone(), changes: subscription.changes, stale: false };
        self.reconcile(&mut sink, subscription.snapshot, subscription.time)?;
        self.effects.executor.start_sink(&name, target, columns_of(&columns), key);
        self.effects.sinks.insert(name, sink);
        Ok(())
    }

    /// Enqueues the difference between the view's `snapshot` and what the sink was sent.
    fn reconcile(&self, sink: &mut SinkState, snapshot: Vec<(Row, isize)>, time: u64) -> Result<(), Error> {
        let mut difference: HashMap<Row, i64> = HashMap::new();
        for (row, count) in self.effects.executor.sent(&sink.definition.name) {
            *difference.entry(row.iter().map(value).collect()).or_default() -= count;
        }
        for (row, count) in snapshot {
            *difference.entry(row).or_default() += count as i64;
        }
        let changes: Vec<(Row, i64)> = difference.into_iter().filter(|(_, count)| *count != 0).collect();
        if !changes.is_empty() {
            self.effects.executor.enqueue(self.sink_effect(sink, changes, time))?;
        }
        sink.stale = false;
        Ok(())
    }

    fn sink_effect(&self, sink: &SinkState, changes: Vec<(Row, i64)>, time: u64) -> Effect {
        let definition = &sink.definition;
        Effect {
            stream: Stream::Mutation,
            connector: definition.target.connector.clone(),
            resource: sink.resource.clone(),
            ability: definition.target.sink_ability().to_string(),
            payload: Batch {
                sink: definition.name.clone(),
                epoch: definition.epoch,
                sequence: self.effects.executor.next_sequence(&definition.name),
                timestamp: time,
                changes: ordered(changes, &sink.key)
                    .into_iter()
                    .map(|(row, diff)| weft_effects::Change { diff, row: row.iter().map(datum).collect() })
                    .collect(),
            },
        }
    }

    /// Turns each sink's new view changes into effects in the outbox. Called after a commit,
    /// before it is acknowledged.
    pub(super) fn enqueue_sink_changes(&mut self) {
        let mut sinks = std::mem::take(&mut self.effects.sinks);
        for sink in sinks.values_mut() {
            let result = if sink.stale {
                while sink.changes.try_recv().is_ok() {}
                match self.view(&sink.definition.view) {
                    Ok((_, state)) => state
                        .snapshot()
                        .map_err(Error::from)
                        .and_then(|snapshot| self.reconcile(sink, snapshot, state.time())),
                    Err(error) => Err(error),
                }
            } else {
                let mut result = Ok(());
                while let Ok(changes) = sink.changes.try_recv() {
                    let updates = changes.updates.into_iter().map(|(row, diff)| (row, diff as i64)).collect();
                    result = self
                        .effects
                        .executor
                        .enqueue(self.sink_effect(sink, updates, changes.time))
                        .map_err(Error::from);
                    if result.is_err() {
                        break;
                    }
                }
                result
            };
            if let Err(error) = result {
                // The commit stands (it is in the write-ahead log); the sink catches up by
                // reconciling at the next commit or start.
                tracing::error!(sink = %sink.definition.name, %error, "could not write to the outbox");
                sink.stale = true;
            }
        }
        self.effects.sinks = sinks;
        if let Err(error) = self.effects.executor.compact_if_large() {
            tracing::error!(%error, "could not compact the outbox");
        }
    }

    fn create_source(&mut self, mut definition: SourceDefinition) -> Result<Output, Error> {
        let name = definition.name.clone();
        if self.relations.contains_key(&name) || self.effects.sinks.contains_key(&name) {
            return catalog_error(format!("relation, sink or source {name} already exists"));
        }
        let declared = (!definition.columns.is_empty()).then(|| columns_of(&definition.columns));
        let (columns, opened) = self
            .effects
            .executor
            .open_source(&definition.target, declared)
            .map_err(|error| Error::Catalog(format!("source {name}: {error}")))?;
        definition.columns = columns.iter().map(|column| (column.name.clone(), column_type(column.kind))).collect();
        let id = self.next_id;
        let create_table =
            Record::CreateTable { id, name: name.clone(), columns: definition.columns.clone(), primary_key: None };
        self.wal.append(&[create_table, Record::CreateSource { definition: definition.clone() }])?;
        self.install_table(id, name.clone(), definition.columns.clone(), None)?;
        self.install_source(definition, Some(opened))?;
        // The snapshot: the statement returns once the first read is in the table (or after a
        // few seconds; the rows then arrive with a later ingestion).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.effects.executor.source_reads(&name) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.ingest_sources()?;
        Ok(Output::Status("CREATE SOURCE".into()))
    }

    /// Starts following a source whose table exists.
    pub(super) fn install_source(
        &mut self,
        definition: SourceDefinition,
        opened: Option<Box<dyn weft_effects::Source>>,
    ) -> Result<(), Error> {
        let reads = self.effects.executor.start_source(
            &definition.name,
            &definition.target,
            columns_of(&definition.columns),
            opened,
            definition.poll_ms,
        )?;
        self.effects.sources.insert(definition.name.clone(), SourceState { definition, reads });
        Ok(())
    }

    /// Applies what the sources have read since the last call, as one transaction; returns the
    /// number of rows changed. Does nothing inside an open transaction.
    pub fn ingest_sources(&mut self) -> Result<usize, Error> {
        if self.transaction.in_transaction || !self.has_inputs() {
            return Ok(0);
        }
        let mut changed = 0;
        let names: Vec<String> = self.effects.sources.keys().cloned().collect();
        for name in names {
            let mut snapshot: Option<Vec<Row>> = None;
            let mut appended: Vec<Row> = Vec::new();
            while let Ok(read) = self.effects.sources[&name].reads.try_recv() {
                let convert = |rows: Vec<Vec<weft_effects::Datum>>| -> Vec<Row> {
                    rows.into_iter().map(|row| row.iter().map(value).collect()).collect()
                };
                match read.snapshot {
                    Some(rows) => {
                        snapshot = Some(convert(rows));
                        appended.clear();
                    }
                    None => appended.extend(convert(read.appended)),
                }
            }
            let (deletes, inserts) = match snapshot {
                Some(mut desired) => {
                    desired.extend(appended);
                    self.difference_from(&name, desired)?
                }
                None => (Vec::new(), appended),
            };
            changed += self.ingest_into(&name, deletes, inserts, &format!("source {name}"))?;
        }
        let (deletes, inserts) = self.observed_changes();
        changed += self.ingest_into(crate::reading_views::READS_TABLE, deletes, inserts, "query effects")?;
        self.commit_pending()?;
        Ok(changed)
    }

    /// Applies changes to a managed table within the ingestion transaction; on error the whole
    /// transaction is rolled back and the error names `what`.
    fn ingest_into(&mut self, table: &str, deletes: Vec<Row>, inserts: Vec<Row>, what: &str) -> Result<usize, Error> {
        if deletes.is_empty() && inserts.is_empty() {
            return Ok(0);
        }
        self.effects.ingesting = true;
        let result = self.change_table(table, deletes, inserts);
        self.effects.ingesting = false;
        result.map_err(|error| {
            self.rollback_pending();
            Error::Constraint(format!("{what}: {error}"))
        })
    }

    /// The rows to delete from and insert into table `name` so that it holds `desired`.
    fn difference_from(&self, name: &str, desired: Vec<Row>) -> Result<(Vec<Row>, Vec<Row>), Error> {
        let mut counts: HashMap<Row, i64> = HashMap::new();
        self.table(name)?.table().expect("a source fills a table").for_each(|row, count| {
            *counts.entry(row.clone()).or_default() -= count as i64;
        });
        for row in desired {
            *counts.entry(row).or_default() += 1;
        }
        let mut deletes = Vec::new();
        let mut inserts = Vec::new();
        for (row, count) in counts {
            let target = if count < 0 { &mut deletes } else { &mut inserts };
            target.extend(std::iter::repeat_n(row, count.unsigned_abs() as usize));
        }
        Ok((deletes, inserts))
    }

    /// Marks a failed effect pending again; its sink retries it (and the effects after it).
    pub fn retry_effect(&mut self, cid: &str) -> Result<(), Error> {
        Ok(self.effects.executor.retry(cid)?)
    }

    /// The signed receipt with this CID of an effect's delivery or failure.
    pub fn effect_receipt(&self, cid: &str) -> Option<weft_effects::SignedReceipt> {
        self.effects.executor.receipt(cid)
    }

    /// The status and last error of an effect.
    pub fn effect_status(&self, cid: &str) -> Option<(weft_effects::Status, Option<String>)> {
        self.effects.executor.status(cid)
    }

    /// Waits up to `timeout` for the sinks to deliver what they can; returns how many effects
    /// are still pending.
    pub fn wait_for_effects(&self, timeout: std::time::Duration) -> usize {
        self.effects.executor.wait_idle(timeout, false)
    }

    /// Like [`Database::wait_for_effects`], but gives up early once every sink that still has
    /// pending effects keeps failing (a command line exiting need not wait out a dead server).
    pub fn settle_effects(&self, timeout: std::time::Duration) -> usize {
        self.effects.executor.wait_idle(timeout, true)
    }

    /// Effects by status (`pending`, `delivered`, `failed`).
    pub fn effect_counts(&self) -> BTreeMap<&'static str, u64> {
        self.effects.executor.counts()
    }

    /// Whether any source or reading view is defined (the server then ingests periodically).
    pub fn has_inputs(&self) -> bool {
        !self.effects.sources.is_empty() || !self.effects.reads.is_empty()
    }

    /// Refuses statements that change a source's table or drop a sink's view.
    pub(super) fn check_not_managed(&self, name: &str, dropping_view: bool) -> Result<(), Error> {
        if name == crate::reading_views::READS_TABLE && !self.effects.ingesting {
            return Err(Error::Constraint(format!(
                "{name} holds the observations of query effects; it is written only by them"
            )));
        }
        if self.effects.sources.contains_key(name) && !self.effects.ingesting {
            return Err(Error::Constraint(format!(
                "table {name} is filled by source {name}; change the source, or DROP SOURCE {name}"
            )));
        }
        if dropping_view {
            if let Some(sink) = self.effects.sinks.values().find(|sink| sink.definition.view == name) {
                return catalog_error(format!("cannot drop {name}: sink {} reads it", sink.definition.name));
            }
        }
        Ok(())
    }
}
