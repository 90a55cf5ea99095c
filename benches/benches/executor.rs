//! Criterion times for the executor workloads (see `workloads`): wake+poll and spawn, for
//! `wsk_executor::raw`, embassy-executor and the hand-written callback floor, side by side.
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

criterion_group!(benches, wake_poll, spawn);
criterion_main!(benches);
