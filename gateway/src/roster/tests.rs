use super::*;
use std::sync::Arc;

const HEADER: &str =
    "resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n";

fn roster(rows: &str) -> (Residents, Vec<Problem>) {
    let (r, p) = parse(format!("{HEADER}{rows}").as_bytes(), "roster.csv");
    (r, p.into_vec())
}

#[test]
fn a_good_roster_parses_with_no_problem() {
    let (r, p) = roster(
        "R1,张三华,女,1950-01-02,独居,1号楼,1单元,101,G01,100,AABBCCDD,\nR2,李四,男,,,,,,,,,\n",
    );
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(r.len(), 2);
    assert_eq!(r["R1"].card_id.as_deref(), Some("AABBCCDD"));
    assert_eq!(r["R2"].card_id, None);
}

#[test]
fn every_bad_row_is_named_with_its_line() {
    let (r, p) = roster(
        "R1,张三,女,1950-01-02,,,,,,,AABBCCDD,\n\
         R1,王五,女,1950-01-02,,,,,,,,\n\
         R3,,女,1950-01-02,,,,,,,,\n\
         R4,赵六,女,1950-13-40,,,,,,,,\n\
         R5,钱七,女,,,,,,,,aabbccdd,\n\
         R 6,孙八,女,,,,,,,,,\n\
         R7,周九,女,,,,,,,,XYZ,\n",
    );
    let lines: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        lines,
        [
            "roster.csv:3",
            "roster.csv:4",
            "roster.csv:5",
            "roster.csv:6",
            "roster.csv:7",
            "roster.csv:8"
        ],
        "{p:?}"
    );
    assert!(p[0].message.contains("duplicate resident id R1"));
    assert!(p[3]
        .message
        .contains("card AABBCCDD is also the card of R1"));
    assert_eq!(r.keys().collect::<Vec<_>>(), ["R1"]);
}

#[test]
fn a_file_without_the_roster_header_is_refused() {
    let (_, p) = parse(b"id,fullname\nR1,x\n", "x.csv");
    assert_eq!(p.total(), 1);
    assert!(p.listed()[0].message.contains("resident_id and name"));
}

#[test]
fn diff_names_added_removed_changed_and_card_changes() {
    let (old, _) =
        roster("R1,张三,女,1950-01-02,,,,,G01,,AABBCCDD,\nR2,李四,男,,,,,,,,11223344,\n");
    let (new, _) =
        roster("R1,张三,女,1950-01-02,独居,,,,G01,,AABBCCEE,\nR3,王五,男,,,,,,,,55667788,\n");
    let d = diff(&old, &new);
    assert_eq!(d.added, ["R3"]);
    assert_eq!(d.removed, ["R2"]);
    assert_eq!(d.changed, ["R1"]);
    assert_eq!(
        d.card_changes,
        [(
            "R1".to_string(),
            Some("AABBCCDD".to_string()),
            Some("AABBCCEE".to_string())
        )]
    );
    assert_eq!(diff(&new, &new), RosterDiff::default());
}

#[test]
fn a_replaced_roster_is_seen_by_every_clone() {
    let live = Roster::new(Residents::new());
    let other = live.clone();
    let (new, _) = roster("R1,张三,女,,,,,,,,,\n");
    live.replace(Arc::new(new));
    assert!(other.contains("R1"));
    assert_eq!(other.current().len(), 1);
}

#[test]
fn a_staged_file_replaces_its_destination_only_when_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("roster.csv");
    std::fs::write(&dest, "old").expect("write");
    let staged = StagedFile::write(&dest, b"new").expect("stage");
    assert_eq!(std::fs::read_to_string(&dest).expect("read"), "old");
    staged.install().expect("install");
    assert_eq!(std::fs::read_to_string(&dest).expect("read"), "new");
    StagedFile::write(&dest, b"newer").expect("stage").discard();
    assert_eq!(std::fs::read_to_string(&dest).expect("read"), "new");
}

#[test]
fn an_excel_export_with_a_bom_and_crlf_line_ends_parses() {
    let text = format!(
        "\u{feff}{}R1,张三,女,1950-01-02,,,,,,,AABBCCDD,\r\n",
        HEADER.replace('\n', "\r\n")
    );
    let (r, p) = parse(text.as_bytes(), "roster.csv");
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(r["R1"].card_id.as_deref(), Some("AABBCCDD"));
}

#[test]
fn a_roster_not_in_utf8_is_refused_with_a_hint() {
    // "张三" in GBK, as an older Excel on a Chinese Windows saves it.
    let mut bytes = HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(b"R1,\xd5\xc5\xc8\xfd,F,,,,,,,,,\n");
    let (r, p) = parse(&bytes, "roster.csv");
    assert!(r.is_empty());
    assert_eq!(p.total(), 1, "{p:?}");
    assert!(p.listed()[0].message.contains("CSV UTF-8"), "{p:?}");
}

#[test]
fn a_file_of_bad_rows_lists_the_first_problems_and_counts_the_rest() {
    let mut rows = String::new();
    for i in 0..10_000 {
        rows.push_str(&format!("bad id {i},,x,notadate,,,,,,,zzzz{i},\n"));
    }
    let (r, p) = parse(format!("{HEADER}{rows}").as_bytes(), "roster.csv");
    assert!(r.is_empty());
    assert_eq!(p.listed().len(), MAX_LISTED_PROBLEMS);
    assert_eq!(p.total(), 40_000, "four problems a row");
    let list = p.into_vec();
    assert_eq!(list.len(), MAX_LISTED_PROBLEMS + 1);
    assert!(
        list[MAX_LISTED_PROBLEMS].message.contains("39900 more"),
        "{list:?}"
    );
}

#[test]
fn a_long_value_is_quoted_back_cut_short_and_a_huge_row_is_refused_whole() {
    let long_id = "x".repeat(1000);
    let huge_name = "名".repeat(MAX_ROW_BYTES);
    let (r, p) = roster(&format!(
        "{long_id},张三,,,,,,,,,,\nR2,{huge_name},,,,,,,,,,\n"
    ));
    assert!(r.is_empty());
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].message.len() < 200, "{}", p[0].message);
    assert!(p[0].message.contains("(1000 bytes)"), "{}", p[0].message);
    assert_eq!(p[1].path, "roster.csv:3");
    assert!(p[1].message.contains("at most 4096"), "{}", p[1].message);
    assert!(p[1].message.len() < 200, "{}", p[1].message);
}
