//! The `weft` binary end to end: `sql -c` with every output format, script files, `run`,
//! `EXPLAIN`, and `COPY` round trips through CSV, Parquet and JSON lines (plus bad files).

use std::process::Command;

fn weft(directory: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weft")).arg("--data-dir").arg(directory).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

fn temporary_directory(label: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("weft-cli-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[test]
fn formats_scripts_and_explain() {
    let directory = temporary_directory("formats");
    let data = directory.join("data");
    let (ok, _, error) = weft(&data, &["sql", "-c", "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'); CREATE VIEW v AS SELECT count(*) AS n FROM t"]);
    assert!(ok, "{error}");
    let (_, csv, _) = weft(&data, &["sql", "--format", "csv", "-c", "SELECT * FROM t ORDER BY id"]);
    assert_eq!(csv, "id,name\n1,a\n2,b\n");
    let (_, json, _) = weft(&data, &["sql", "--format", "json", "-c", "SELECT n FROM v"]);
    assert_eq!(json.trim(), r#"[{"n":2}]"#);
    let (_, table, _) = weft(&data, &["sql", "-c", "SELECT n FROM v"]);
    assert!(table.contains("| n |") && table.contains("(1 row)"), "{table}");
    let script = directory.join("script.sql");
    std::fs::write(&script, "INSERT INTO t VALUES (3, 'c');\nSELECT n FROM v;\n").unwrap();
    let (ok, out, _) = weft(&data, &["sql", "--format", "csv", script.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(out, "n\n3\n");
    let (_, plan, _) =
        weft(&data, &["sql", "--format", "csv", "-c", "EXPLAIN SELECT name, count(*) FROM t GROUP BY name"]);
    assert!(plan.contains("Reduce group") && plan.contains("Get t"), "{plan}");
    let (ok, _, error) = weft(&data, &["sql", "-c", "SELECT * FROM nowhere"]);
    assert!(!ok && error.contains("nowhere"), "{error}");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn the_demo_runs() {
    let directory = temporary_directory("demo");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/revenue.sql");
    for _ in 0..2 {
        let (ok, out, error) = weft(&directory.join("data"), &["run", demo]);
        assert!(ok, "{error}");
        assert!(out.contains("| north  | 19.25 | 2 |"), "{out}");
        assert!(out.contains("| west   | 30.0  | 1 |"), "{out}");
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn copy_round_trips_through_every_format() {
    let directory = temporary_directory("copy");
    let data = directory.join("data");
    let (ok, _, error) = weft(&data, &["sql", "-c", "CREATE TABLE src (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE, ok BOOLEAN, at TIMESTAMP); INSERT INTO src VALUES (1, 'a', 1.5, true, '2024-01-01 00:00:00'), (2, NULL, NULL, false, NULL), (3, 'c,d', -2.0, NULL, '2023-05-06 07:08:09')"]);
    assert!(ok, "{error}");
    for extension in ["csv", "parquet", "jsonl"] {
        let file = directory.join(format!("out.{extension}"));
        let file = file.to_str().unwrap();
        let (ok, out, error) = weft(&data, &["sql", "-c", &format!("COPY (SELECT * FROM src) TO '{file}'")]);
        assert!(ok && out.contains("COPY 3"), "{extension}: {error}");
        let table = format!("dst_{extension}");
        let sql = format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE, ok BOOLEAN, at TIMESTAMP); COPY {table} FROM '{file}'"
        );
        let (ok, out, error) = weft(&data, &["sql", "-c", &sql]);
        assert!(ok && out.contains("COPY 3"), "{extension}: {out} {error}");
        let (_, differences, _) = weft(
            &data,
            &[
                "sql",
                "--format",
                "csv",
                "-c",
                &format!("SELECT count(*) AS d FROM (SELECT * FROM src EXCEPT SELECT * FROM {table})"),
            ],
        );
        assert_eq!(differences, "d\n0\n", "{extension} round trip changed rows");
    }
    // Bad files: a clear error, and the table keeps its rows.
    let bad = directory.join("bad.parquet");
    std::fs::write(&bad, "this is not parquet").unwrap();
    let (ok, _, error) = weft(&data, &["sql", "-c", &format!("COPY dst_csv FROM '{}'", bad.display())]);
    assert!(!ok && error.contains("bad.parquet"), "{error}");
    let lines = directory.join("bad.jsonl");
    std::fs::write(&lines, "{\"id\": 9, \"name\": \"x\"}\n{not json\n").unwrap();
    let (ok, _, error) = weft(&data, &["sql", "-c", &format!("COPY dst_csv FROM '{}'", lines.display())]);
    assert!(!ok && error.contains("bad.jsonl"), "{error}");
    let (_, count, _) = weft(&data, &["sql", "--format", "csv", "-c", "SELECT count(*) AS n FROM dst_csv"]);
    assert_eq!(count, "n\n3\n");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn the_functions_demo_runs_and_reruns_nothing() {
    let directory = temporary_directory("functions-demo");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/functions.sql");
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--data-dir")
        .arg(directory.join("data"))
        .args(["run", demo])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("| 1  | 12         | blue-chair |"), "{out}");
    // 10, 4, 11 and two distinct titles: five receipts, whatever the row count.
    assert!(out.contains("| receipts |") && out.contains("| 5        |"), "{out}");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn the_shell_reads_statements_across_lines_and_survives_errors() {
    use std::io::Write;
    let directory = temporary_directory("shell");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--data-dir")
        .arg(directory.join("data"))
        .args(["sql", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"CREATE TABLE t (s TEXT);\nINSERT INTO t VALUES ('a;\nb');\nSELECT nonsense FROM;\nSELECT length(s) AS n\n  FROM t;\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("ERROR:"), "{out}");
    assert!(out.ends_with("n\n4\n"), "{out}");
    std::fs::remove_dir_all(&directory).unwrap();
}
