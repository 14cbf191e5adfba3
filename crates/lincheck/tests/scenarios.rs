//! Hand-written histories with a known answer.

use lincheck::{Budget, History, HistoryError, Op, Operation, Outcome, Recorded, Verdict, check};

fn at(client: u64, op: Op, outcome: Outcome, call: u64, ret: u64) -> Operation {
    on("k", client, op, outcome, call, ret)
}

fn on(key: &str, client: u64, op: Op, outcome: Outcome, call: u64, ret: u64) -> Operation {
    Operation {
        client,
        key: key.to_owned(),
        op,
        outcome,
        call,
        ret: Some(ret),
    }
}

fn never_returned(client: u64, op: Op, call: u64) -> Operation {
    Operation {
        client,
        key: "k".to_owned(),
        op,
        outcome: Outcome::Unknown,
        call,
        ret: None,
    }
}

fn verdict(ops: Vec<Operation>) -> Verdict {
    check(
        &Recorded::from_operations(ops).expect("well-formed history"),
        Budget::default(),
    )
}

fn assert_linearizable(ops: Vec<Operation>) {
    let verdict = verdict(ops);
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
}

/// Asserts the verdict is NotLinearizable and returns the excerpt's
/// operations.
fn assert_violation(ops: Vec<Operation>) -> (Operation, Vec<Operation>) {
    match verdict(ops) {
        Verdict::NotLinearizable { explanation, .. } => {
            // The excerpt is a counterexample in its own right.
            let again = verdict(explanation.excerpt.clone());
            assert!(
                matches!(again, Verdict::NotLinearizable { .. }),
                "excerpt checks as {again}:\n{explanation}"
            );
            (explanation.culprit, explanation.excerpt)
        }
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn a_sequential_history_of_every_operation_kind_is_linearizable() {
    assert_linearizable(vec![
        at(1, Op::Get, Outcome::NotFound, 1, 2),
        at(1, Op::Delete, Outcome::NotFound, 3, 4),
        at(1, Op::cas(Some("zz"), "x0"), Outcome::Conflict, 5, 6),
        at(1, Op::cas(None, "a"), Outcome::Ok, 7, 8),
        at(2, Op::Get, Outcome::found("a"), 9, 10),
        at(2, Op::cas(None, "x1"), Outcome::Conflict, 11, 12),
        at(2, Op::put("b"), Outcome::Ok, 13, 14),
        at(1, Op::cas(Some("a"), "x2"), Outcome::Conflict, 15, 16),
        at(1, Op::cas(Some("b"), "c"), Outcome::Ok, 17, 18),
        at(3, Op::Get, Outcome::found("c"), 19, 20),
        at(3, Op::Delete, Outcome::Deleted, 21, 22),
        at(3, Op::Get, Outcome::NotFound, 23, 24),
        at(2, Op::put("d"), Outcome::Ok, 25, 26),
        at(2, Op::Get, Outcome::found("d"), 27, 28),
    ]);
}

#[test]
fn an_empty_history_is_linearizable() {
    assert_linearizable(Vec::new());
}

#[test]
fn a_get_on_a_key_never_written_must_find_nothing() {
    assert_linearizable(vec![at(1, Op::Get, Outcome::NotFound, 1, 2)]);
    assert_violation(vec![at(1, Op::Get, Outcome::found("a"), 1, 2)]);
}

#[test]
fn a_sequential_delete_of_an_absent_key_cannot_report_deleted() {
    assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::Delete, Outcome::Deleted, 3, 4),
        at(1, Op::Delete, Outcome::Deleted, 5, 6),
    ]);
}

#[test]
fn a_sequential_compare_and_set_must_succeed_when_its_expectation_holds() {
    assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::cas(Some("a"), "b"), Outcome::Conflict, 3, 4),
    ]);
    assert_violation(vec![at(1, Op::cas(None, "a"), Outcome::Conflict, 1, 2)]);
}

#[test]
fn a_create_only_compare_and_set_fails_on_an_existing_key() {
    assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::cas(None, "b"), Outcome::Ok, 3, 4),
    ]);
}

#[test]
fn a_stale_read_after_a_newer_value_was_read_is_not_linearizable() {
    let (culprit, excerpt) = assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        // "b" is being written while client 2 reads it ...
        at(1, Op::put("b"), Outcome::Ok, 3, 20),
        at(2, Op::Get, Outcome::found("b"), 4, 5),
        // ... so a read that starts afterwards cannot see "a" again.
        at(3, Op::Get, Outcome::found("a"), 6, 7),
    ]);
    assert_eq!(culprit.call, 6);
    assert_eq!(excerpt.len(), 4);
}

#[test]
fn a_read_of_a_value_never_written_is_not_linearizable() {
    let (culprit, excerpt) = assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::Get, Outcome::found("a"), 3, 4),
        at(2, Op::Get, Outcome::found("phantom"), 5, 6),
        at(1, Op::put("b"), Outcome::Ok, 7, 8),
    ]);
    assert_eq!(culprit.outcome, Outcome::found("phantom"));
    // Such a read is a counterexample on its own.
    assert_eq!(excerpt, vec![culprit]);
}

#[test]
fn two_compare_and_sets_on_the_same_expected_value_cannot_both_succeed() {
    let (_, excerpt) = assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::cas(Some("a"), "b"), Outcome::Ok, 3, 10),
        at(3, Op::cas(Some("a"), "c"), Outcome::Ok, 4, 9),
    ]);
    assert_eq!(excerpt.len(), 3);
}

#[test]
fn a_read_that_sees_the_value_before_an_acknowledged_put_exposes_a_lost_write() {
    let (culprit, excerpt) = assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("b"), Outcome::Ok, 3, 4),
        at(2, Op::Get, Outcome::found("a"), 5, 6),
    ]);
    assert_eq!(culprit.op, Op::Get);
    assert_eq!(excerpt.len(), 3);
}

#[test]
fn a_read_from_the_future_is_not_linearizable() {
    assert_violation(vec![
        at(1, Op::Get, Outcome::found("a"), 1, 2),
        at(2, Op::put("a"), Outcome::Ok, 3, 4),
    ]);
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    for last in ["a", "b"] {
        assert_linearizable(vec![
            at(1, Op::put("a"), Outcome::Ok, 1, 10),
            at(2, Op::put("b"), Outcome::Ok, 2, 9),
            at(3, Op::Get, Outcome::found(last), 11, 12),
        ]);
    }
}

#[test]
fn a_read_overlapping_a_write_may_see_the_old_or_the_new_value() {
    for seen in [Outcome::found("a"), Outcome::found("b")] {
        assert_linearizable(vec![
            at(1, Op::put("a"), Outcome::Ok, 1, 2),
            at(1, Op::put("b"), Outcome::Ok, 3, 10),
            at(2, Op::Get, seen, 4, 5),
        ]);
    }
}

#[test]
fn overlapping_reads_may_disagree_while_a_write_is_in_flight() {
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("b"), Outcome::Ok, 3, 20),
        at(2, Op::Get, Outcome::found("a"), 4, 10),
        at(3, Op::Get, Outcome::found("b"), 5, 9),
    ]);
}

#[test]
fn an_unknown_put_may_have_taken_effect() {
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("b"), Outcome::Unknown, 3, 4),
        at(2, Op::Get, Outcome::found("b"), 5, 6),
    ]);
}

#[test]
fn an_unknown_put_may_never_take_effect() {
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        never_returned(1, Op::put("b"), 3),
        at(2, Op::Get, Outcome::found("a"), 5, 6),
        at(2, Op::Get, Outcome::found("a"), 7, 8),
    ]);
}

#[test]
fn an_unknown_put_may_take_effect_after_the_client_gave_up() {
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("b"), Outcome::Unknown, 3, 4),
        at(2, Op::Get, Outcome::found("a"), 10, 11),
        at(2, Op::Get, Outcome::found("b"), 12, 13),
    ]);
}

#[test]
fn an_unknown_put_takes_effect_at_most_once() {
    assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("b"), Outcome::Unknown, 3, 4),
        at(2, Op::Get, Outcome::found("b"), 5, 6),
        at(2, Op::put("c"), Outcome::Ok, 7, 8),
        at(2, Op::Get, Outcome::found("b"), 9, 10),
    ]);
}

#[test]
fn an_unknown_put_cannot_take_effect_before_it_was_invoked() {
    assert_violation(vec![
        at(2, Op::Get, Outcome::found("b"), 1, 2),
        at(1, Op::put("b"), Outcome::Unknown, 3, 4),
    ]);
}

#[test]
fn an_unknown_delete_may_or_may_not_have_removed_the_key() {
    for seen in [Outcome::NotFound, Outcome::found("a")] {
        assert_linearizable(vec![
            at(1, Op::put("a"), Outcome::Ok, 1, 2),
            never_returned(1, Op::Delete, 3),
            at(2, Op::Get, seen, 5, 6),
        ]);
    }
}

#[test]
fn an_unknown_compare_and_set_only_writes_if_its_expectation_held() {
    // It may have swapped "a" for "b" ...
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::cas(Some("a"), "b"), Outcome::Unknown, 3, 4),
        at(2, Op::Get, Outcome::found("b"), 5, 6),
    ]);
    // ... but not once "a" was gone for good.
    assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("c"), Outcome::Ok, 3, 4),
        at(1, Op::cas(Some("a"), "b"), Outcome::Unknown, 5, 6),
        at(2, Op::Get, Outcome::found("b"), 7, 8),
    ]);
}

#[test]
fn an_unknown_read_constrains_nothing() {
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::Get, Outcome::Unknown, 3, 4),
        never_returned(3, Op::Get, 5),
    ]);
}

#[test]
fn keys_are_checked_independently_and_the_failing_key_is_named() {
    let ops = vec![
        on("x", 1, Op::put("a"), Outcome::Ok, 1, 2),
        on("y", 2, Op::put("a"), Outcome::Ok, 3, 4),
        on("x", 1, Op::Get, Outcome::found("a"), 5, 6),
        on("y", 2, Op::Delete, Outcome::Deleted, 7, 8),
        // On a single register this read would be fine; on "y" it is not.
        on("y", 3, Op::Get, Outcome::found("a"), 9, 10),
    ];
    match verdict(ops) {
        Verdict::NotLinearizable { key, explanation } => {
            assert_eq!(key, "y");
            assert!(explanation.excerpt.iter().all(|op| op.key == "y"));
        }
        other => panic!("expected key y to fail, got {other}"),
    }
}

#[test]
fn the_explanation_drops_reads_that_play_no_part_in_the_violation() {
    let mut ops = vec![at(1, Op::put("a"), Outcome::Ok, 1, 2)];
    for i in 0..20 {
        ops.push(at(2, Op::Get, Outcome::found("a"), 3 + 2 * i, 4 + 2 * i));
    }
    ops.push(at(1, Op::put("b"), Outcome::Ok, 50, 51));
    ops.push(at(3, Op::Get, Outcome::found("a"), 52, 53));
    // Later operations are cut off: the violation is complete at 53.
    ops.push(at(3, Op::put("c"), Outcome::Ok, 54, 55));
    ops.push(at(3, Op::Get, Outcome::found("c"), 56, 57));
    let (culprit, excerpt) = assert_violation(ops);
    assert_eq!(culprit.ret, Some(53));
    let shown: Vec<(Op, Outcome)> = excerpt.into_iter().map(|op| (op.op, op.outcome)).collect();
    assert_eq!(
        shown,
        vec![
            (Op::put("a"), Outcome::Ok),
            (Op::put("b"), Outcome::Ok),
            (Op::Get, Outcome::found("a")),
        ]
    );
}

#[test]
fn the_explanation_prints_the_excerpt_and_marks_the_culprit() {
    let Verdict::NotLinearizable { explanation, .. } = verdict(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::Get, Outcome::found("ghost"), 3, 4),
    ]) else {
        panic!("expected a violation");
    };
    let text = explanation.to_string();
    assert!(text.contains("key \"k\""), "{text}");
    assert!(text.contains("no operation on this key wrote"), "{text}");
    assert!(text.contains("found \"ghost\"   <- culprit"), "{text}");
}

#[test]
fn a_search_that_exceeds_its_budget_is_undecided_rather_than_wrong() {
    let mut ops = Vec::new();
    for client in 0..6 {
        ops.push(at(
            client,
            Op::put(format!("v{client}")),
            Outcome::Ok,
            client,
            100,
        ));
    }
    ops.push(at(9, Op::Get, Outcome::found("v3"), 101, 102));
    let recorded = Recorded::from_operations(ops).expect("well-formed history");
    assert_eq!(
        check(&recorded, Budget::steps_per_key(3)),
        Verdict::Undecided {
            key: "k".to_owned()
        }
    );
    assert_eq!(check(&recorded, Budget::UNLIMITED), Verdict::Linearizable);
}

#[test]
fn a_violation_on_one_key_outranks_an_undecided_key() {
    let mut ops = Vec::new();
    for client in 0..6 {
        ops.push(on(
            "a",
            client,
            Op::put(format!("v{client}")),
            Outcome::Ok,
            client,
            100,
        ));
    }
    ops.push(on("a", 9, Op::Get, Outcome::found("v3"), 101, 102));
    ops.push(on("b", 1, Op::Get, Outcome::found("nope"), 1, 2));
    let recorded = Recorded::from_operations(ops).expect("well-formed history");
    assert!(matches!(
        check(&recorded, Budget::steps_per_key(3)),
        Verdict::NotLinearizable { key, .. } if key == "b"
    ));
}

#[test]
fn the_recorder_orders_a_completed_operation_before_a_later_invocation() {
    let history = History::new();
    let put_a = history.invoke(1, "k", Op::put("a"));
    history.complete(put_a, Outcome::Ok);
    let put_b = history.invoke(1, "k", Op::put("b"));
    history.complete(put_b, Outcome::Ok);
    let get = history.invoke(2, "k", Op::Get);
    history.complete(get, Outcome::found("a"));
    let recorded = history.finish().expect("well-formed history");
    assert!(matches!(
        check(&recorded, Budget::default()),
        Verdict::NotLinearizable { .. }
    ));
}

#[test]
fn the_recorder_treats_operations_never_completed_as_unknown() {
    let history = History::new();
    let put_a = history.invoke(1, "k", Op::put("a"));
    history.complete(put_a, Outcome::Ok);
    let _stuck = history.invoke(2, "k", Op::put("b"));
    let get = history.invoke(3, "k", Op::Get);
    history.complete(get, Outcome::found("b"));
    let recorded = history.snapshot().expect("well-formed history");
    assert_eq!(recorded.operations()[1].outcome, Outcome::Unknown);
    assert_eq!(recorded.operations()[1].ret, None);
    assert_eq!(check(&recorded, Budget::default()), Verdict::Linearizable);
}

#[test]
fn the_recorder_is_usable_from_many_threads() {
    let history = std::sync::Arc::new(History::new());
    let threads: Vec<_> = (0..4_u64)
        .map(|client| {
            let history = std::sync::Arc::clone(&history);
            std::thread::spawn(move || {
                for seq in 0..100 {
                    let id = history.invoke(client, "k", Op::put(format!("c{client}-{seq}")));
                    history.complete(id, Outcome::Ok);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("recording thread");
    }
    let history = std::sync::Arc::into_inner(history).expect("threads are done");
    let recorded = history.finish().expect("well-formed history");
    assert_eq!(recorded.len(), 400);
    assert_eq!(check(&recorded, Budget::default()), Verdict::Linearizable);
}

#[test]
fn the_recorder_reports_a_second_completion() {
    let history = History::new();
    let id = history.invoke(1, "k", Op::Get);
    history.complete(id, Outcome::NotFound);
    history.complete(id, Outcome::NotFound);
    assert!(matches!(
        history.finish(),
        Err(HistoryError::CompletedTwice { .. })
    ));
}

#[test]
fn a_history_that_writes_one_value_twice_is_refused() {
    let result = Recorded::from_operations(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::cas(None, "a"), Outcome::Conflict, 3, 4),
    ]);
    assert!(matches!(
        result,
        Err(HistoryError::DuplicateWrite {
            first: 0,
            second: 1,
            ..
        })
    ));
}

#[test]
fn the_same_value_may_be_written_to_different_keys() {
    assert!(
        Recorded::from_operations(vec![
            on("x", 1, Op::put("a"), Outcome::Ok, 1, 2),
            on("y", 1, Op::put("a"), Outcome::Ok, 3, 4),
        ])
        .is_ok()
    );
}

#[test]
fn an_outcome_the_operation_cannot_return_is_refused() {
    let result = Recorded::from_operations(vec![at(1, Op::put("a"), Outcome::Deleted, 1, 2)]);
    assert!(matches!(
        result,
        Err(HistoryError::OutcomeDoesNotFit { .. })
    ));
}

#[test]
fn a_response_before_its_invocation_is_refused() {
    let result = Recorded::from_operations(vec![at(1, Op::Get, Outcome::NotFound, 5, 4)]);
    assert!(matches!(result, Err(HistoryError::ReturnBeforeCall { .. })));
}

#[test]
fn a_known_outcome_without_a_response_time_is_refused() {
    let mut op = at(1, Op::Get, Outcome::NotFound, 1, 2);
    op.ret = None;
    assert!(matches!(
        Recorded::from_operations(vec![op]),
        Err(HistoryError::OutcomeWithoutReturn { .. })
    ));
}

#[test]
fn each_unknown_write_of_an_unread_value_takes_effect_at_most_once() {
    let deletes = |n: u64| {
        let mut ops = vec![
            never_returned(1, Op::put("x1"), 1),
            never_returned(2, Op::put("x2"), 2),
        ];
        for i in 0..n {
            ops.push(at(3, Op::Delete, Outcome::Deleted, 10 + 2 * i, 11 + 2 * i));
        }
        ops
    };
    assert_linearizable(deletes(2));
    assert_violation(deletes(3));
}

#[test]
fn a_conflicting_compare_and_set_tells_its_expected_value_from_others() {
    assert_violation(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(2, Op::cas(Some("a"), "x"), Outcome::Conflict, 3, 4),
    ]);
    assert_linearizable(vec![
        at(1, Op::put("a"), Outcome::Ok, 1, 2),
        at(1, Op::put("b"), Outcome::Ok, 3, 4),
        at(2, Op::cas(Some("a"), "x"), Outcome::Conflict, 5, 6),
    ]);
}
