//! One micro-batch of generated pin records, stage by stage and whole: decode → cleaning SQL →
//! Parquet/Delta write and commit on local disk. Reports records per second.

fn main() {}
