//! The commit gate: what makes every read see one complete timestamp across all tables and views.
//!
//! A writer holds the gate from its first change until the engine has applied its commit (or
//! the transaction is rolled back); readers hold it only while they copy the rows they read. So
//! readers never see half of a transaction, nor one view ahead of another, and neither side waits
//! for the other's planning or execution: only for a copy or for the apply of a commit.
//!
//! There is at most one writer at a time (the database serializes writers); the gate is not a
//! general read-write lock and is not re-entrant.

use std::sync::{Condvar, Mutex};

/// Readers-writer exclusion between commits and snapshot copies.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    readers: usize,
    writer: bool,
    /// A writer waits: new readers hold back, so a stream of readers cannot starve it.
    writer_waiting: bool,
}

/// Held while a reader copies rows; dropping it lets a waiting writer in.
#[derive(Debug)]
pub struct ReadGuard<'gate> {
    gate: &'gate Gate,
}

impl Gate {
    /// A gate with no readers and no writer.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Waits until no writer holds or waits for the gate, then enters as a reader.
    pub fn read(&self) -> ReadGuard<'_> {
        let mut state = self.state.lock().expect("gate lock");
        while state.writer || state.writer_waiting {
            state = self.changed.wait(state).expect("gate lock");
        }
        state.readers += 1;
        ReadGuard { gate: self }
    }

    /// Waits until no reader is copying, then holds the gate until [`Gate::end_write`].
    pub fn begin_write(&self) {
        let mut state = self.state.lock().expect("gate lock");
        state.writer_waiting = true;
        while state.writer || state.readers > 0 {
            state = self.changed.wait(state).expect("gate lock");
        }
        state.writer_waiting = false;
        state.writer = true;
    }

    /// Releases the gate taken by [`Gate::begin_write`].
    pub fn end_write(&self) {
        self.state.lock().expect("gate lock").writer = false;
        self.changed.notify_all();
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().expect("gate lock");
        state.readers -= 1;
        if state.readers == 0 {
            self.gate.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_reader_waits_for_the_writer_to_finish() {
        let gate = Arc::new(Gate::new());
        let written = Arc::new(AtomicBool::new(false));
        gate.begin_write();
        let reader = {
            let (gate, written) = (gate.clone(), written.clone());
            std::thread::spawn(move || {
                let _guard = gate.read();
                written.load(Ordering::SeqCst)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        written.store(true, Ordering::SeqCst);
        gate.end_write();
        assert!(reader.join().unwrap(), "the reader entered before the write ended");
    }

    #[test]
    fn a_waiting_writer_holds_back_new_readers() {
        let gate = Arc::new(Gate::new());
        let reading = gate.read();
        let writer = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.begin_write();
                gate.end_write();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(gate.state.lock().unwrap().writer_waiting);
        drop(reading);
        writer.join().unwrap();
        let _again = gate.read();
    }

    #[test]
    fn readers_share_the_gate() {
        let gate = Gate::new();
        let first = gate.read();
        let second = gate.read();
        drop((first, second));
        gate.begin_write();
        gate.end_write();
    }
}
