//! Engine-level tests: plans built by hand, maintained across commits, on one and several workers.

use weft_engine::plan::{Aggregate, AggregateFunction, JoinKind, SortKey};
use weft_engine::{Change, ColumnType, Engine, Expr, Plan, Row, Value};

fn get(id: u64, arity: usize) -> Box<Plan> {
    Box::new(Plan::Get { id, name: format!("t{id}"), column_types: vec![ColumnType::BigInt; arity] })
}

fn sorted(mut rows: Vec<(Row, isize)>) -> Vec<(Row, isize)> {
    rows.sort();
    rows
}

fn insert(table: u64, row: Row) -> Change {
    Change { table, row, diff: 1 }
}

#[test]
fn grouped_sum_join_and_top_k_follow_changes() {
    for workers in [1, 3] {
        let mut engine = Engine::start(workers).unwrap();
        engine.create_table(1).unwrap();
        engine.create_table(2).unwrap();
        engine
            .commit(vec![
                insert(1, vec![Value::Int(1), Value::Text("a".into()), Value::float(2.0)]),
                insert(1, vec![Value::Int(2), Value::Text("b".into()), Value::float(3.0)]),
                insert(1, vec![Value::Int(3), Value::Text("a".into()), Value::float(4.5)]),
                insert(2, vec![Value::Text("a".into()), Value::Text("north".into())]),
            ])
            .unwrap();
        let sum = Plan::Reduce {
            input: get(1, 3),
            group: vec![Expr::Column(1)],
            aggregates: vec![
                Aggregate {
                    function: AggregateFunction::Sum,
                    arg: Some(Expr::Column(2)),
                    distinct: false,
                    float: true,
                },
                Aggregate { function: AggregateFunction::Count, arg: None, distinct: false, float: false },
            ],
        };
        let sums = engine.create_view(10, "sums", sum).unwrap();
        let join = Plan::Join {
            left: get(1, 3),
            right: get(2, 2),
            kind: JoinKind::Left,
            left_keys: vec![Expr::Column(1)],
            right_keys: vec![Expr::Column(0)],
            nulls_equal: false,
            residual: None,
        };
        let joined = engine.create_view(11, "joined", join).unwrap();
        let top = Plan::TopK {
            input: get(1, 3),
            order: vec![SortKey { expr: Expr::Column(2), descending: true, nulls_first: false }],
            limit: Some(1),
            offset: 0,
        };
        let top = engine.create_view(12, "top", top).unwrap();
        assert_eq!(
            sorted(sums.snapshot().unwrap()),
            vec![
                (vec![Value::Text("a".into()), Value::float(6.5), Value::Int(2)], 1),
                (vec![Value::Text("b".into()), Value::float(3.0), Value::Int(1)], 1),
            ]
        );
        assert_eq!(joined.len(), 3);
        assert_eq!(top.snapshot().unwrap()[0].0[0], Value::Int(3));
        engine
            .commit(vec![Change {
                table: 1,
                row: vec![Value::Int(3), Value::Text("a".into()), Value::float(4.5)],
                diff: -1,
            }])
            .unwrap();
        assert_eq!(
            sorted(sums.snapshot().unwrap())[0],
            (vec![Value::Text("a".into()), Value::float(2.0), Value::Int(1)], 1)
        );
        assert_eq!(top.snapshot().unwrap()[0].0[0], Value::Int(2), "workers = {workers}");
        let unmatched: Vec<_> = joined.snapshot().unwrap().into_iter().filter(|(row, _)| row[3].is_null()).collect();
        assert_eq!(unmatched.len(), 1);
    }
}

#[test]
fn evaluation_errors_make_the_view_unreadable_until_retracted() {
    let mut engine = Engine::start(1).unwrap();
    engine.create_table(1).unwrap();
    let divide = Plan::Project {
        input: get(1, 1),
        exprs: vec![Expr::Binary {
            op: weft_engine::expr::BinaryOp::Divide,
            left: Box::new(Expr::Literal(Value::Int(10))),
            right: Box::new(Expr::Column(0)),
        }],
    };
    let view = engine.create_view(2, "ratios", divide).unwrap();
    engine.commit(vec![insert(1, vec![Value::Int(0)]), insert(1, vec![Value::Int(5)])]).unwrap();
    let error = view.snapshot().unwrap_err().to_string();
    assert!(error.contains("Divide by zero"), "{error}");
    engine.commit(vec![Change { table: 1, row: vec![Value::Int(0)], diff: -1 }]).unwrap();
    assert_eq!(view.snapshot().unwrap(), vec![(vec![Value::Int(2)], 1)]);
}

#[test]
fn views_created_after_history_see_the_compacted_contents() {
    let text = |s: &str| Value::Text(s.into());
    let mut engine = Engine::start(1).unwrap();
    engine.create_table(1).unwrap();
    engine.commit(vec![insert(1, vec![Value::Int(3), text("ab")])]).unwrap();
    engine.commit(vec![insert(1, vec![Value::Int(16), text("q")])]).unwrap();
    engine.commit(vec![Change { table: 1, row: vec![Value::Int(16), text("q")], diff: -1 }]).unwrap();
    engine
        .commit(vec![
            Change { table: 1, row: vec![Value::Int(3), text("ab")], diff: -1 },
            insert(1, vec![Value::Int(3), text("a")]),
        ])
        .unwrap();
    let copy = engine.create_view(2, "copy", Plan::Project { input: get(1, 2), exprs: vec![Expr::Column(1)] }).unwrap();
    assert_eq!(copy.snapshot().unwrap(), vec![(vec![text("a")], 1)]);
    let count = Plan::Reduce {
        input: get(1, 2),
        group: vec![Expr::Column(1)],
        aggregates: vec![Aggregate { function: AggregateFunction::Count, arg: None, distinct: false, float: false }],
    };
    let counts = engine.create_view(3, "counts", count).unwrap();
    assert_eq!(counts.snapshot().unwrap(), vec![(vec![text("a"), Value::Int(1)], 1)]);
}

/// Views created at many points of a long random history must all hold exactly the table's
/// current rows (imports of compacted, merged arrangements lose nothing).
#[test]
fn late_views_over_long_histories_are_exact() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for workers in [1, 2] {
        let mut engine = Engine::start(workers).unwrap();
        engine.create_table(1).unwrap();
        let mut model: std::collections::BTreeMap<i64, isize> = Default::default();
        let mut views = Vec::new();
        for round in 0..300u64 {
            let mut changes = Vec::new();
            for _ in 0..1 + next() % 4 {
                let key = (next() % 12) as i64;
                let present = model.get(&key).copied().unwrap_or(0) > 0;
                let diff = if present && next() % 2 == 0 { -1 } else { 1 };
                *model.entry(key).or_insert(0) += diff;
                changes.push(Change { table: 1, row: vec![Value::Int(key)], diff });
            }
            engine.commit(changes).unwrap();
            if round % 25 == 7 {
                let id = 100 + round;
                views.push(
                    engine
                        .create_view(id, "copy", Plan::Project { input: get(1, 1), exprs: vec![Expr::Column(0)] })
                        .unwrap(),
                );
            }
            let expected: Vec<(Row, isize)> = model
                .iter()
                .filter(|(_, count)| **count != 0)
                .map(|(key, count)| (vec![Value::Int(*key)], *count))
                .collect();
            for view in &views {
                assert_eq!(sorted(view.snapshot().unwrap()), expected, "round {round}, workers {workers}");
            }
        }
    }
}
