//! The catalog: weft's tables and views, and the current contents of every table.
//!
//! Table contents live here (not only in the dataflow) because `UPDATE`/`DELETE` must find the
//! rows they change, `PRIMARY KEY` must be checked before a change is committed, and ad-hoc
//! queries read tables through DataFusion. Views' contents live in the engine's [`ViewState`].

use datafusion::arrow::datatypes::SchemaRef;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use weft_engine::{ColumnType, Plan, RelationId, Row, ViewState};
use weft_sql::RowSource;

/// A table or a view.
pub struct Relation {
    pub id: RelationId,
    pub name: String,
    pub columns: Vec<(String, ColumnType)>,
    pub schema: SchemaRef,
    pub kind: RelationKind,
}

/// What a relation is.
pub enum RelationKind {
    /// A base table and its rows.
    Table(Arc<TableData>),
    /// A view kept up to date incrementally.
    View { sql: String, plan: Plan, state: Arc<ViewState> },
}

impl Relation {
    /// The table's data, if this is a table.
    pub fn table(&self) -> Option<&Arc<TableData>> {
        match &self.kind {
            RelationKind::Table(data) => Some(data),
            RelationKind::View { .. } => None,
        }
    }

    /// The relation ids this relation reads (none for a table).
    pub fn dependencies(&self) -> Vec<RelationId> {
        match &self.kind {
            RelationKind::Table(_) => Vec::new(),
            RelationKind::View { plan, .. } => plan.dependencies(),
        }
    }
}

/// The rows of one table. Rows are indexed by their primary key, or by the whole row (with a
/// count of copies) when the table has no primary key.
#[derive(Debug)]
pub struct TableData {
    pub primary_key: Option<Vec<usize>>,
    rows: RwLock<HashMap<Row, (Row, usize), ahash::RandomState>>,
}

impl TableData {
    /// An empty table.
    pub fn new(primary_key: Option<Vec<usize>>) -> TableData {
        TableData { primary_key, rows: RwLock::new(HashMap::default()) }
    }

    /// The index key of a row.
    pub fn key(&self, row: &[weft_engine::Value]) -> Row {
        match &self.primary_key {
            Some(columns) => columns.iter().map(|column| row[*column].clone()).collect(),
            None => row.to_vec(),
        }
    }

    /// Adds (`diff > 0`) or removes (`diff < 0`) `diff.abs()` copies of `row`. Fails, changing
    /// nothing, on a duplicate primary key or a missing row.
    pub fn apply(&self, row: &Row, diff: i64) -> Result<(), String> {
        let mut rows = self.rows.write().expect("table lock");
        self.apply_locked(&mut rows, row, diff)
    }

    /// Applies `changes` in order under one lock. On the first failure, the changes applied so
    /// far are undone and the failure is returned with its index.
    pub fn apply_all<'a>(
        &self,
        changes: impl ExactSizeIterator<Item = (&'a Row, i64)> + Clone,
    ) -> Result<(), (usize, String)> {
        let mut rows = self.rows.write().expect("table lock");
        rows.reserve(changes.len());
        for (index, (row, diff)) in changes.clone().enumerate() {
            if let Err(message) = self.apply_locked(&mut rows, row, diff) {
                for (row, diff) in changes.take(index).collect::<Vec<_>>().into_iter().rev() {
                    self.apply_locked(&mut rows, row, -diff).expect("undo of an applied change");
                }
                return Err((index, message));
            }
        }
        Ok(())
    }

    fn apply_locked(
        &self,
        rows: &mut HashMap<Row, (Row, usize), ahash::RandomState>,
        row: &Row,
        diff: i64,
    ) -> Result<(), String> {
        let key = self.key(row);
        if diff > 0 {
            match rows.get_mut(&key) {
                Some(_) if self.primary_key.is_some() => {
                    let shown: Vec<String> = key.iter().map(|value| value.to_string()).collect();
                    return Err(format!("duplicate primary key ({})", shown.join(", ")));
                }
                Some((_, count)) => *count += diff as usize,
                None => {
                    rows.insert(key, (row.clone(), diff as usize));
                }
            }
        } else if diff < 0 {
            let removed = diff.unsigned_abs() as usize;
            match rows.get_mut(&key) {
                Some((existing, count)) if existing == row && *count >= removed => {
                    *count -= removed;
                    if *count == 0 {
                        rows.remove(&key);
                    }
                }
                _ => return Err("row to delete is not in the table".to_string()),
            }
        }
        Ok(())
    }

    /// The row with primary key `key`, if any.
    pub fn get(&self, key: &Row) -> Option<Row> {
        self.rows.read().expect("table lock").get(key).map(|(row, _)| row.clone())
    }

    /// Calls `visit` with every distinct row and its number of copies.
    pub fn for_each(&self, mut visit: impl FnMut(&Row, usize)) {
        for (row, count) in self.rows.read().expect("table lock").values() {
            visit(row, *count);
        }
    }

    /// Every row, with duplicates repeated.
    pub fn all_rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        self.for_each(|row, count| rows.extend(std::iter::repeat_n(row, count).cloned()));
        rows
    }

    /// Number of rows, duplicates included.
    pub fn len(&self) -> usize {
        self.rows.read().expect("table lock").values().map(|(_, count)| count).sum()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.read().expect("table lock").is_empty()
    }
}

impl RowSource for TableData {
    fn rows(&self) -> Result<Vec<Row>, String> {
        Ok(self.all_rows())
    }
}

/// Reads a view's maintained contents for DataFusion.
#[derive(Debug)]
pub struct ViewSource(pub Arc<ViewState>);

impl RowSource for ViewSource {
    fn rows(&self) -> Result<Vec<Row>, String> {
        let snapshot = self.0.snapshot().map_err(|error| error.to_string())?;
        let mut rows = Vec::with_capacity(snapshot.len());
        for (row, count) in snapshot {
            rows.extend(std::iter::repeat_n(row, count.max(0) as usize));
        }
        Ok(rows)
    }
}
