//! Nested interrupts at three priorities schedule the same and different
//! tasklets; the drain runs in PendSV at the lowest priority (the
//! RTIC/embassy style). See `src/storm.rs` for the scenario and its checks;
//! it also measures the stack high-water mark by painting.

#![no_std]
#![no_main]

const NAME: &str = "storm";
const AT_EXIT: bool = false;
type StormBoard = bottomhalf_firmware_tests::PendSvBoard;

include!("../storm.rs");
