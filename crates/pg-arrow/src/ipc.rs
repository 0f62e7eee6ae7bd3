//! Arrow IPC stream bytes, the form row data takes across the connector boundary.

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

/// Serialize one batch as a complete IPC stream (schema, batch, end marker).
pub fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    {
        let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Read every batch of an IPC stream.
pub fn from_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
    // Validation is skipped only for data this process can trust; IPC from a connector is not trusted.
    let reader = StreamReader::try_new(bytes, None)?;
    reader.collect()
}
