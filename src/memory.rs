//! Process-wide memory policy: weft runs on small (4 KiB) pages, without transparent huge pages,
//! and a helper thread faults in the pages of large allocations (see [`Prefaulting`]).
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas. Whether a 2 MiB page is
//! cheap to fault in depends on the machine's state: on small virtual machines a huge page the
//! kernel has to compact memory for, or the hypervisor has to back anew, can cost far more than
//! the small pages it replaces, and a bulk load or a view's first build touches hundreds of
//! megabytes of fresh memory. The measurements behind this choice are in `docs/performance.md`.

/// Turns transparent huge pages off for this process (Linux; elsewhere nothing happens).
/// Call it first thing in `main`: it applies to memory already mapped too.
pub fn use_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Allocations from this size on are prefaulted by the helper thread (see [`Prefaulting`]).
const PREFAULT_FROM_BYTES: usize = 64 << 20;
/// The helper prefaults this much at a time, from the end of an allocation towards its start.
const PREFAULT_STEP_BYTES: usize = 4 << 20;
/// Allocations waiting for the helper (a few at most: large allocations are rare).
const PREFAULT_QUEUE: usize = 16;

/// A global allocator that has a helper thread fault in the pages of each large allocation
/// (from `PREFAULT_FROM_BYTES`) while the thread that made it starts writing it.
///
/// A view's first build or a bulk load writes hundreds of megabytes of fresh memory (a view's
/// arrangement, its readable copy), and on the virtual machines weft is measured on the page
/// faults of fresh memory cost more than the writing itself (about a microsecond per 4 KiB
/// page). Faults on different pages proceed in parallel (two threads touching 1 GiB: 0.17 s,
/// one: 0.34 s), so the helper walks each large allocation from its end towards its start,
/// a step at a time, and stops where the allocating thread, writing from the start, has got
/// to. Prefaulting only maps zeroed pages where none are: it never changes what the memory
/// holds, whoever owns it by then.
pub struct Prefaulting<A>(pub A);

/// Allocations waiting for the helper: `(start, length)` in bytes.
struct Queue {
    waiting: [(usize, usize); PREFAULT_QUEUE],
    count: usize,
}

static QUEUE: std::sync::Mutex<Queue> = std::sync::Mutex::new(Queue { waiting: [(0, 0); PREFAULT_QUEUE], count: 0 });
static QUEUED: std::sync::Condvar = std::sync::Condvar::new();
static PREFAULTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts the helper thread of [`Prefaulting`] (once; Linux only). Until it runs, the allocator
/// only allocates.
pub fn start_prefaulting() {
    #[cfg(target_os = "linux")]
    {
        static START: std::sync::Once = std::sync::Once::new();
        START.call_once(|| {
            let started = std::thread::Builder::new().name("weft-prefault".into()).spawn(|| loop {
                let (start, length) = {
                    let mut queue = QUEUE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    while queue.count == 0 {
                        queue = QUEUED.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    queue.count -= 1;
                    queue.waiting[queue.count]
                };
                prefault_backwards(start, length);
            });
            PREFAULTING.store(started.is_ok(), std::sync::atomic::Ordering::Release);
        });
    }
}

/// Faults in `[start, start + length)` a step at a time from the end, until a step whose first
/// page is already resident (the allocating thread got there first).
#[cfg(target_os = "linux")]
fn prefault_backwards(start: usize, length: usize) {
    const PAGE_BYTES: usize = 4096;
    let first = start.next_multiple_of(PAGE_BYTES);
    let mut end = (start + length) / PAGE_BYTES * PAGE_BYTES;
    while end > first {
        let step = (end - first).min(PREFAULT_STEP_BYTES);
        let from = end - step;
        let mut resident = 0u8;
        // SAFETY: mincore and madvise take an address range and change no memory contents:
        // mincore reports whether pages are resident (failing harmlessly on an unmapped range),
        // and MADV_POPULATE_WRITE maps zeroed pages where none are mapped, as a write fault would,
        // leaving mapped pages as they are.
        unsafe {
            if libc::mincore(from as *mut libc::c_void, PAGE_BYTES, &mut resident) != 0 || resident & 1 == 1 {
                return;
            }
            if libc::madvise(from as *mut libc::c_void, step, libc::MADV_POPULATE_WRITE) != 0 {
                return;
            }
        }
        end = from;
    }
}

#[cfg(not(target_os = "linux"))]
fn prefault_backwards(_start: usize, _length: usize) {}

/// Queues a large allocation for the helper (dropped if the queue is full).
fn queue_prefault(pointer: *mut u8, length: usize) {
    if pointer.is_null() || length < PREFAULT_FROM_BYTES || !PREFAULTING.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    // The lock is held only to copy two words in or out, and allocates nothing.
    let mut queue = QUEUE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if queue.count < PREFAULT_QUEUE {
        let count = queue.count;
        queue.waiting[count] = (pointer as usize, length);
        queue.count += 1;
        QUEUED.notify_one();
    }
}

// SAFETY: every call is passed on to the inner allocator unchanged; the pointers it returns are
// only read as addresses to prefault (see `prefault_backwards`).
unsafe impl<A: std::alloc::GlobalAlloc> std::alloc::GlobalAlloc for Prefaulting<A> {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let pointer = unsafe { self.0.alloc(layout) };
        queue_prefault(pointer, layout.size());
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let pointer = unsafe { self.0.alloc_zeroed(layout) };
        queue_prefault(pointer, layout.size());
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.realloc(pointer, layout, new_size) }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};

    fn resident(address: usize) -> bool {
        let page = address / 4096 * 4096;
        let mut resident = 0u8;
        // SAFETY: mincore only reports on the page.
        unsafe { libc::mincore(page as *mut libc::c_void, 4096, &mut resident) == 0 && resident & 1 == 1 }
    }

    #[test]
    fn a_large_allocation_is_faulted_in_from_its_end_and_keeps_what_is_written() {
        start_prefaulting();
        let allocator = Prefaulting(System);
        let layout = Layout::from_size_align(PREFAULT_FROM_BYTES * 2, 4096).unwrap();
        // SAFETY: a valid, non-zero layout; the block is written only within it and freed once.
        unsafe {
            let block = allocator.alloc(layout);
            assert!(!block.is_null());
            block.write(7);
            let last = block as usize + layout.size() - 1;
            let waited = std::time::Instant::now();
            while !resident(last) && waited.elapsed() < std::time::Duration::from_secs(10) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(resident(last), "the helper faulted in the allocation's last page");
            assert_eq!(block.read(), 7, "what was written stays");
            assert_eq!(*(last as *const u8), 0, "prefaulted memory reads as zero");
            allocator.dealloc(block, layout);
        }
    }
}
