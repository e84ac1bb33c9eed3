//! The storm of `storm`, drained at interrupt exit (Linux style): every
//! top half brackets its body with `Runtime::irq_enter`/`irq_exit`, and the
//! exit of the outermost one drains, at that handler's priority, while the
//! more urgent top halves keep preempting it. The board pends no drain
//! interrupt; what an exhausted drain leaves is drained by the main loop.

#![no_std]
#![no_main]

const NAME: &str = "storm_irq_exit";
const AT_EXIT: bool = true;
type StormBoard = bottomhalf_firmware_tests::ExitBoard;

include!("../storm.rs");
