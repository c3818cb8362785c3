//! A DataFusion table provider over a weft table or view, so ad-hoc queries, `COPY` and the
//! correctness oracle can run DataFusion on weft's current contents.
//!
//! The provider also carries the relation's engine id: lowering a `TableScan` to a weft plan
//! downcasts the scan's source to this type to learn which arrangement to import.

use crate::convert::rows_batch;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::fmt::Debug;
use std::sync::Arc;
use weft_ir::{RelationId, Row};

/// Where a relation's current rows come from.
pub trait RowSource: Send + Sync + Debug {
    /// The rows as of the latest complete timestamp, or why they cannot be read.
    fn rows(&self) -> std::result::Result<Vec<Row>, String>;
}

/// A weft table or view as seen by DataFusion.
#[derive(Debug)]
pub struct RelationProvider {
    /// The engine's id of the relation.
    pub id: RelationId,
    /// Whether this is a view (else a table).
    pub is_view: bool,
    schema: SchemaRef,
    source: Arc<dyn RowSource>,
}

impl RelationProvider {
    /// The id of system relations, which are read-only and cannot be maintained in views.
    pub const SYSTEM: RelationId = RelationId::MAX;

    /// A provider reading `source`, whose rows have `schema`.
    pub fn new(id: RelationId, is_view: bool, schema: SchemaRef, source: Arc<dyn RowSource>) -> RelationProvider {
        RelationProvider { id, is_view, schema, source }
    }
}

#[async_trait]
impl TableProvider for RelationProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        if self.is_view {
            TableType::View
        } else {
            TableType::Base
        }
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = self.source.rows().map_err(DataFusionError::Execution)?;
        let batch = rows_batch(&rows, &self.schema).map_err(|error| DataFusionError::External(Box::new(error)))?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema.clone(), projection.cloned())?)
    }
}
