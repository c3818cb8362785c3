//! A weft user-defined function as a DataFusion scalar UDF.
//!
//! DataFusion needs the function's name and types to plan queries that call it, and runs it a
//! batch at a time ([`Callable::call_batch`]) when an ad-hoc query calls it. Lowering recognises
//! this type and turns the call into [`weft_ir::Expr::Udf`], so views call the same
//! registered [`Callable`].

use crate::convert::{array_values, arrow_type, column_array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use weft_ir::functions::{Callable, FunctionId};
use weft_ir::{ColumnType, Value};

/// A registered weft function.
#[derive(Debug)]
pub struct WeftUdf {
    /// The function's id in its database's registry.
    pub id: FunctionId,
    /// Its SQL name.
    pub name: String,
    /// Its parameters' types.
    pub params: Vec<ColumnType>,
    /// Its result's type.
    pub result: ColumnType,
    signature: Signature,
    callable: Arc<dyn Callable>,
}

impl WeftUdf {
    /// A UDF named `name` taking `params` and returning `result`.
    pub fn new(
        id: FunctionId,
        name: &str,
        params: Vec<ColumnType>,
        result: ColumnType,
        callable: Arc<dyn Callable>,
    ) -> WeftUdf {
        let signature =
            Signature::exact(params.iter().map(|param| arrow_type(*param)).collect(), Volatility::Immutable);
        WeftUdf { id, name: name.to_string(), params, result, signature, callable }
    }
}

impl PartialEq for WeftUdf {
    fn eq(&self, other: &WeftUdf) -> bool {
        self.id == other.id
    }
}

impl Eq for WeftUdf {}

impl Hash for WeftUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl ScalarUDFImpl for WeftUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(arrow_type(self.result))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let external = |error: crate::ConvertError| DataFusionError::External(Box::new(error));
        let mut columns = Vec::with_capacity(args.args.len());
        for arg in &args.args {
            let array = arg.to_array(rows)?;
            columns.push(array_values(array.as_ref()).map_err(external)?);
        }
        let mut call_args = Vec::with_capacity(rows * columns.len());
        for row in 0..rows {
            call_args.extend(columns.iter().map(|column| column[row].clone()));
        }
        let mut outputs = Vec::with_capacity(rows);
        self.callable.call_batch(rows, &call_args, &mut outputs);
        let results = outputs
            .into_iter()
            .map(|output| output.map(|value| vec![value]).map_err(|error| DataFusionError::Execution(error.0)))
            .collect::<Result<Vec<Vec<Value>>>>()?;
        let array = column_array(&results, 0, &self.name, &arrow_type(self.result)).map_err(external)?;
        Ok(ColumnarValue::Array(array))
    }
}
