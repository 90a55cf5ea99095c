//! Criterion times for the executor workloads (see `workloads`): wake+poll and spawn, for
//! `wsk_executor::raw`, embassy-executor and the hand-written callback floor, side by side,
//! and many woken tasks under a small budget (ours).
//!
//! `cargo bench -p wsk-benches --bench executor -- --warm-up-time 1 --measurement-time 3`;
//! `cargo xtask bench` runs this and the callgrind counts together (see benches/README.md).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

mod workloads;

use workloads::{embassy, floor, ours};

/// One wake of the task's waker, one run of the queue, the future `Pending` again.
fn wake_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("wake_poll");
    // Set up outside the measured closures: criterion calls those many times, and each setup
    // leaks an executor and a pool.
    let (mut step, slot) = ours::wake_poll();
    group.bench_function("ours", |b| b.iter(&mut step));
    black_box(slot.polls());
    let (mut step, slot) = embassy::wake_poll();
    group.bench_function("embassy", |b| b.iter(&mut step));
    black_box(slot.polls());
    let (mut step, runs) = floor::wake_poll();
    group.bench_function("floor", |b| b.iter(&mut step));
    black_box(runs);
    group.finish();
}

/// One spawn from a static pool, one run of the queue to completion, the slot free again.
fn spawn(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn");
    let mut step = ours::spawn();
    group.bench_function("ours", |b| b.iter(&mut step));
    let mut step = ours::spawn_join();
    group.bench_function("ours-join", |b| b.iter(&mut step));
    let mut step = embassy::spawn();
    group.bench_function("embassy", |b| b.iter(&mut step));
    let mut step = floor::spawn();
    group.bench_function("floor", |b| b.iter(&mut step));
    group.finish();
    black_box(workloads::sink());
    black_box(workloads::pends());
}

/// [`workloads::MANY_TASKS`] wakes, then polls under a budget of [`workloads::MANY_BUDGET`]
/// until every woken task ran: one step (divide by `MANY_TASKS` for a task's share).
fn many_woken(c: &mut Criterion) {
    let mut group = c.benchmark_group("many_woken");
    let (mut step, slots) = ours::many_woken();
    group.bench_function("ours", |b| b.iter(&mut step));
    black_box(slots.len());
    group.finish();
}

criterion_group!(benches, wake_poll, spawn, many_woken);
criterion_main!(benches);
