//! Views that read the world (`http_get`): installing their two halves, forwarding the wanted
//! resources to the effect executor, and writing its observations into `weft_reads`.
//! See [`crate::reading_views`] for the design.

use super::*;
use crate::reading_views::{split_reading_view, ReadingView, ReadsDefinition, READS_TABLE};
use std::sync::mpsc::Receiver;

/// A running reading view.
pub(super) struct ReadsState {
    pub(super) definition: ReadsDefinition,
    changes: weft_engine::ChangeStream,
    wants: tokio::sync::mpsc::UnboundedSender<Vec<(String, i64)>>,
    observations: Receiver<crate::executor::Observation>,
}

/// The resource column of a wanted view's row.
fn resource_of(row: &Row) -> Option<String> {
    match row.first() {
        Some(Value::Text(text)) => Some(text.to_string()),
        _ => None,
    }
}

impl Database {
    /// `CREATE MATERIALIZED VIEW` of a view that calls `http_get`; `None` when it does not.
    pub(super) fn create_reading_view(
        &mut self,
        name: &str,
        create: &ast::CreateView,
    ) -> Result<Option<Output>, Error> {
        let Some(ReadingView { query, wanted, ttl, concurrency }) = split_reading_view(&create.query, &create.options)
            .map_err(|message| Error::Catalog(format!("view {name}: {message}")))?
        else {
            return Ok(None);
        };
        if !self.relations.contains_key(READS_TABLE) {
            let sql =
                format!("CREATE TABLE {READS_TABLE} (resource TEXT PRIMARY KEY, body TEXT, observed_at TIMESTAMP)");
            for statement in weft_sql::parse(&sql)? {
                self.execute_statement(statement)?;
            }
        }
        let wanted_name = format!("weft_wanted_{name}");
        if self.relations.contains_key(&wanted_name) {
            return catalog_error(format!("relation {wanted_name} already exists"));
        }
        self.add_view(wanted_name.clone(), &wanted, None)?;
        if let Err(error) = self.add_view(name.to_string(), &query, None) {
            self.drop_view_named(&wanted_name)?;
            return Err(error);
        }
        let definition = ReadsDefinition {
            view: name.to_string(),
            wanted: wanted_name,
            ttl_ms: ttl.map(|ttl| ttl.as_millis() as u64),
            concurrency,
        };
        self.wal.append(&[Record::CreateReads { definition: definition.clone() }])?;
        self.install_reads(definition)?;
        Ok(Some(Output::Status("CREATE MATERIALIZED VIEW".into())))
    }

    /// Starts the query effects of a reading view whose views exist.
    pub(super) fn install_reads(&mut self, definition: ReadsDefinition) -> Result<(), Error> {
        let (_, state) = self.view(&definition.wanted)?;
        let subscription = {
            let _reading = self.read_gate().map(Gate::read);
            state.subscribe()?
        };
        let mut observed = HashMap::new();
        if let Some(table) = self.relations.get(READS_TABLE).and_then(|relation| relation.table()) {
            table.for_each(|row, _| {
                if let (Some(Value::Text(resource)), Some(Value::Timestamp(at))) = (row.first(), row.get(2)) {
                    observed.insert(resource.to_string(), *at);
                }
            });
        }
        let ttl = definition.ttl_ms.map(std::time::Duration::from_millis);
        let (wants, observations) =
            self.effects.executor.start_reads(&definition.view, ttl, definition.concurrency, observed);
        let initial: Vec<(String, i64)> =
            subscription.snapshot.iter().filter_map(|(row, count)| Some((resource_of(row)?, *count as i64))).collect();
        let _ = wants.send(initial);
        self.effects.reads.insert(
            definition.view.clone(),
            ReadsState { definition, changes: subscription.changes, wants, observations },
        );
        Ok(())
    }

    /// Tells the executor which resources the reading views want now. Called after a commit.
    pub(super) fn forward_wanted(&mut self) {
        for state in self.effects.reads.values() {
            while let Ok(changes) = state.changes.try_recv() {
                let changes =
                    changes.updates.iter().filter_map(|(row, diff)| Some((resource_of(row)?, *diff as i64))).collect();
                let _ = state.wants.send(changes);
            }
        }
    }

    /// The rows to delete from and insert into `weft_reads` for the observations made since
    /// the last call.
    pub(super) fn observed_changes(&self) -> (Vec<Row>, Vec<Row>) {
        let Some(table) = self.relations.get(READS_TABLE).and_then(|relation| relation.table()) else {
            return (Vec::new(), Vec::new());
        };
        let mut latest: HashMap<String, crate::executor::Observation> = HashMap::new();
        for state in self.effects.reads.values() {
            while let Ok(observation) = state.observations.try_recv() {
                latest.insert(observation.resource.clone(), observation);
            }
        }
        let mut deletes = Vec::new();
        let mut inserts = Vec::new();
        for (resource, observation) in latest {
            if let Some(old) = table.get(&vec![Value::Text(resource.as_str().into())]) {
                deletes.push(old);
            }
            inserts.push(vec![
                Value::Text(resource.into()),
                Value::Text(observation.body.into()),
                Value::Timestamp(observation.observed_ns),
            ]);
        }
        (deletes, inserts)
    }

    /// Drops the query effects and the wanted view of reading view `name`, if it is one.
    pub(super) fn drop_reads_of(&mut self, name: &str) -> Result<(), Error> {
        if let Some(state) = self.effects.reads.remove(name) {
            self.effects.executor.stop_reads(name);
            self.wal.append(&[Record::DropEffectful { name: name.to_string() }])?;
            self.drop_view_named(&state.definition.wanted)?;
        }
        Ok(())
    }

    fn drop_view_named(&mut self, name: &str) -> Result<(), Error> {
        if let Some(id) = self.relations.get(name).map(|relation| relation.id) {
            self.wal.append(&[Record::Drop { id }])?;
            self.uninstall(id)?;
        }
        Ok(())
    }

    /// Query effects answered from a fresh observation (memo hits), and reads made.
    pub fn read_counts(&self) -> (u64, u64) {
        self.effects.executor.read_counts()
    }
}
