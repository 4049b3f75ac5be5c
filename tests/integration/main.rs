//! Integration tests, compiled into one binary. The Kinesis tests start their own kinesis-mock
//! (`kinesis-local@0.6.2`) on free loopback ports; tables go to temporary folders.

mod analytics;
mod api;
mod changing_sql;
mod chaos;
mod checkpoint;
mod cleaning_sql;
mod crash;
mod demo;
mod deploy;
mod emulator;
mod end_to_end;
mod exactly_once;
mod fan_out;
mod faults;
mod kpl;
mod leases;
mod lost_records;
mod maintenance;
mod operating;
mod payloads;
mod raw_table;
mod rebuild;
mod reshard;
mod s3;
mod scale_out;
mod source_faults;
mod streaming_core;
mod streams_cli;
mod support;
mod upgrade;
mod user_errors;
