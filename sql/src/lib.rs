//! weft's SQL front end: statements are parsed with DataFusion's `sqlparser`, queries are planned
//! and optimized by DataFusion, and the optimized `LogicalPlan` is lowered to weft's dataflow
//! [`Plan`](weft_engine::Plan). The same DataFusion session also executes ad-hoc queries (and
//! `COPY`) over weft's tables and views through [`RelationProvider`].
//!
//! This crate never depends on the Wasm runtime; the engine never depends on this crate.

pub mod convert;
pub mod lower;
pub mod provider;
pub mod udf;

pub use convert::ConvertError;
pub use lower::{lower_expr, lower_plan, LowerError};
pub use provider::{RelationProvider, RowSource};
pub use udf::WeftUdf;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::future::Future;
use std::sync::Arc;
use weft_engine::Gate;

/// Errors from parsing, planning, lowering or executing SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL.
    #[error("syntax error: {0}")]
    Parse(String),
    /// DataFusion rejected or failed the statement.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// The plan cannot be maintained incrementally.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// The async runtime could not start.
    #[error("could not start the query runtime: {0}")]
    Runtime(String),
    /// DataFusion panicked on this statement (a bug); the database is unaffected.
    #[error("internal error while planning or executing the statement: {0}")]
    Panic(String),
}

/// Runs `work`, turning a panic inside DataFusion into an error for this statement only.
fn guarded<T>(work: impl FnOnce() -> Result<T, SqlError>) -> Result<T, SqlError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(SqlError::Panic(message))
    })
}

/// Parses SQL text into statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    Parser::parse_sql(&GenericDialect {}, sql).map_err(|error| SqlError::Parse(error.to_string()))
}

/// DataFusion planning and execution over weft's relations. Clones share the session and
/// runtime, so a clone on another thread sees the same relations and functions.
#[derive(Clone)]
pub struct Planner {
    context: SessionContext,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Planner {
    /// A planner with no relations registered.
    pub fn new() -> Result<Planner, SqlError> {
        let config = SessionConfig::new().with_information_schema(true);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-query")
            .enable_all()
            .build()
            .map_err(|error| SqlError::Runtime(error.to_string()))?;
        let context = SessionContext::new_with_config(config);
        if let Some(catalog) = context.catalog("datafusion") {
            catalog.register_schema("weft", Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
        }
        Ok(Planner { context, runtime: Arc::new(runtime) })
    }

    /// The DataFusion session (for callers that read files or build data frames).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// Runs a future on the planner's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Makes a relation visible to queries under `name`, replacing any previous one.
    pub fn register(&self, name: &str, provider: Arc<RelationProvider>) -> Result<(), SqlError> {
        self.context.deregister_table(name)?;
        self.context.register_table(name, provider)?;
        Ok(())
    }

    /// Makes a user-defined function callable from SQL (replacing one of the same name).
    pub fn register_function(&self, udf: WeftUdf) {
        self.context.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(udf));
    }

    /// Removes a user-defined function.
    pub fn deregister_function(&self, name: &str) {
        self.context.deregister_udf(name);
    }

    /// Removes a relation from the catalog.
    pub fn deregister(&self, name: &str) -> Result<(), SqlError> {
        self.context.deregister_table(name)?;
        Ok(())
    }

    /// Plans a statement without optimizing it.
    pub fn logical_plan(&self, statement: Statement) -> Result<LogicalPlan, SqlError> {
        let state = self.context.state();
        guarded(|| Ok(self.block_on(state.statement_to_plan(DfStatement::Statement(Box::new(statement))))?))
    }

    /// Plans and optimizes a statement.
    pub fn optimized_plan(&self, statement: Statement) -> Result<LogicalPlan, SqlError> {
        let plan = self.logical_plan(statement)?;
        guarded(|| Ok(self.context.state().optimize(&plan)?))
    }

    /// Executes a logical plan, collecting the result. The relations' rows are copied while
    /// holding `gate` as a reader (when given), so all of them are of one timestamp; execution
    /// then runs on the copies without it.
    pub fn execute(&self, plan: LogicalPlan, gate: Option<&Gate>) -> Result<Vec<RecordBatch>, SqlError> {
        let state = self.context.state();
        let task = self.context.task_ctx();
        guarded(|| {
            let physical = {
                let _reading = gate.map(Gate::read);
                self.block_on(state.create_physical_plan(&plan))?
            };
            Ok(self.block_on(datafusion::physical_plan::collect(physical, task))?)
        })
    }
}
