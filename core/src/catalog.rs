//! The catalog: weft's tables, views and function definitions, and the current contents of
//! every table.
//!
//! Table contents live here (not only in the dataflow) because `UPDATE`/`DELETE` must find the
//! rows they change, `PRIMARY KEY` must be checked before a change is committed, and ad-hoc
//! queries read tables through DataFusion. Views' contents live in the engine's [`ViewState`].

use datafusion::arrow::datatypes::SchemaRef;
use hashbrown::hash_table::{Entry, HashTable};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use weft_engine::{ColumnType, Plan, RelationId, Row, Value, ViewState};
use weft_sql::RowSource;

/// A table or a view as front ends list it (the server's `pg_catalog`, say).
#[derive(Clone, Debug)]
pub struct ListedRelation {
    /// The relation's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// A view (else a table).
    pub is_view: bool,
    /// Its columns.
    pub columns: Vec<(String, ColumnType)>,
    /// A view's SQL.
    pub definition: Option<String>,
}

/// Told the relations whenever the catalog changes (and once when registered): how a front end
/// keeps its own listing of them without the database knowing the front end.
pub trait CatalogObserver: Send + Sync {
    /// The catalog now holds exactly `relations`.
    fn relations_changed(&self, relations: Vec<ListedRelation>);
}

/// A table or a view.
pub struct Relation {
    /// The relation's id in the engine.
    pub id: RelationId,
    /// Its name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<(String, ColumnType)>,
    /// Its columns as an Arrow schema.
    pub schema: SchemaRef,
    /// A table or a view.
    pub kind: RelationKind,
}

/// What a relation is.
pub enum RelationKind {
    /// A base table and its rows.
    Table(Arc<TableData>),
    /// A view kept up to date incrementally.
    View {
        /// The view's SQL.
        sql: String,
        /// Its plan.
        plan: Plan,
        /// Its maintained contents.
        state: Arc<ViewState>,
    },
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

/// The rows of one table, indexed by their primary key, or by the whole row (with a count of
/// copies) when the table has no primary key. The index hashes the key columns of the stored
/// row itself, so a row is kept once, without a separate copy of its key.
#[derive(Debug)]
pub struct TableData {
    /// The primary key's columns, if the table has one.
    pub primary_key: Option<Vec<usize>>,
    rows: RwLock<HashTable<(Row, usize)>>,
    hasher: ahash::RandomState,
}

impl TableData {
    /// An empty table.
    pub fn new(primary_key: Option<Vec<usize>>) -> TableData {
        TableData { primary_key, rows: RwLock::new(HashTable::new()), hasher: ahash::RandomState::new() }
    }

    /// The index key of a row.
    pub fn key(&self, row: &[Value]) -> Row {
        self.key_values(row).cloned().collect()
    }

    /// The values of a row's index key, in key order.
    fn key_values<'a>(&'a self, row: &'a [Value]) -> impl Iterator<Item = &'a Value> + 'a {
        let (columns, whole_row): (&[usize], &[Value]) = match &self.primary_key {
            Some(columns) => (columns, &[]),
            None => (&[], row),
        };
        columns.iter().map(move |column| &row[*column]).chain(whole_row)
    }

    /// The hash of an index key given by its values.
    fn hash_key<'a>(&self, key: impl Iterator<Item = &'a Value>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        for value in key {
            value.hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Whether stored `row` has index key `key`.
    fn has_key(&self, row: &[Value], key: &[Value]) -> bool {
        self.key_values(row).eq(key.iter())
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
        rows.reserve(changes.len(), |(row, _)| self.hash_key(self.key_values(row)));
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

    fn apply_locked(&self, rows: &mut HashTable<(Row, usize)>, row: &Row, diff: i64) -> Result<(), String> {
        let hash = self.hash_key(self.key_values(row));
        let same_key = |(stored, _): &(Row, usize)| self.key_values(stored).eq(self.key_values(row));
        let rehash = |(stored, _): &(Row, usize)| self.hash_key(self.key_values(stored));
        if diff > 0 {
            match rows.entry(hash, same_key, rehash) {
                Entry::Occupied(_) if self.primary_key.is_some() => {
                    let shown: Vec<String> = self.key_values(row).map(|value| value.to_string()).collect();
                    return Err(format!("duplicate primary key ({})", shown.join(", ")));
                }
                Entry::Occupied(mut entry) => entry.get_mut().1 += diff as usize,
                Entry::Vacant(entry) => {
                    entry.insert((row.clone(), diff as usize));
                }
            }
        } else if diff < 0 {
            let removed = diff.unsigned_abs() as usize;
            match rows.find_entry(hash, same_key) {
                Ok(mut entry) if entry.get().0 == *row && entry.get().1 >= removed => {
                    entry.get_mut().1 -= removed;
                    if entry.get().1 == 0 {
                        entry.remove();
                    }
                }
                _ => return Err("row to delete is not in the table".to_string()),
            }
        }
        Ok(())
    }

    /// The row with primary key `key`, if any.
    pub fn get(&self, key: &Row) -> Option<Row> {
        let hash = self.hash_key(key.iter());
        let rows = self.rows.read().expect("table lock");
        rows.find(hash, |(stored, _)| self.has_key(stored, key)).map(|(row, _)| row.clone())
    }

    /// Calls `visit` with every distinct row and its number of copies.
    pub fn for_each(&self, mut visit: impl FnMut(&Row, usize)) {
        for (row, count) in self.rows.read().expect("table lock").iter() {
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
        self.rows.read().expect("table lock").iter().map(|(_, count)| count).sum()
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

/// Defined functions by name.
pub type FunctionCatalog = std::collections::BTreeMap<String, FunctionDefinition>;

/// `CREATE FUNCTION name(types) RETURNS type LANGUAGE wasm AS 'file' [EXPORT 'f']
/// [WITH (fuel = n, memory_mb = n)] [ON ERROR NULL]`, with the module's bytes (so a restart
/// needs no file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionDefinition {
    /// The function's SQL name.
    pub name: String,
    /// The module's bytes (WAT or Wasm).
    pub source: Vec<u8>,
    /// The export called.
    pub export: String,
    /// The parameters' types.
    pub params: Vec<ColumnType>,
    /// The result's type.
    pub result: ColumnType,
    /// Fuel per call.
    pub fuel: u64,
    /// Memory per call, in bytes.
    pub memory_bytes: usize,
    /// A failing call yields NULL instead of failing the statement.
    pub on_error_null: bool,
}

impl FunctionDefinition {
    /// `(BIGINT, TEXT) -> TEXT`.
    pub fn signature_text(&self) -> String {
        let params: Vec<&str> = self.params.iter().map(|param| param.sql_name()).collect();
        format!("({}) -> {}", params.join(", "), self.result.sql_name())
    }
}
