//! Recovery on open: torn and corrupt tails are cut by checksum, damaged indexes rebuilt,
//! corruption inside a sealed segment reported as a typed error naming the file.

use std::fs;
use std::path::{Path, PathBuf};

use runnel_log::{FsyncPolicy, LogConfig, LogError, PartitionLog, Record, StoredRecord};

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Os,
        segment_bytes: 4_096,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::new(format!("key-{i}"), vec![i as u8; 40 + i % 7])
                .with_header("n", i.to_string())
        })
        .collect()
}

fn read_all(log: &PartitionLog) -> Result<Vec<StoredRecord>, LogError> {
    let mut reader = log.reader(log.start_offset())?;
    let mut out = Vec::new();
    loop {
        let batch = reader.read(1_000, usize::MAX)?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Writes `n` records in one segment and returns (dir, what was stored, the last record's
/// frame start, the file's length).
fn one_segment_log(n: usize) -> (tempfile::TempDir, Vec<StoredRecord>, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = records(n);
    let last_len = runnel_log::frame_len(input.last().unwrap()) as u64;
    {
        let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        for record in input {
            log.append_blocking(vec![record]).unwrap();
        }
    }
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let stored = read_all(&log).unwrap();
    drop(log);
    let file = &segment_files(dir.path(), "log")[0];
    let len = fs::metadata(file).unwrap().len();
    (dir, stored, len - last_len, len)
}

#[test]
fn truncating_the_last_record_at_every_byte_keeps_exactly_the_records_before_it() {
    let (source, stored, last_start, len) = one_segment_log(6);
    for cut in last_start..len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source.path(), dir.path());
        let file = &segment_files(dir.path(), "log")[0];
        fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let (log, report) = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(report.truncated_bytes, cut - last_start, "cut at {cut}");
        assert_eq!(read_all(&log).unwrap(), stored[..5], "cut at {cut}");
        assert_eq!(log.high_watermark(), 5);
        // The log continues densely after the cut.
        let appended = log
            .append_blocking(vec![Record::new("k", "after")])
            .unwrap();
        assert_eq!(appended.base_offset, 5);
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(read_all(&log).unwrap().len(), 6);
    }
}

#[test]
fn flipping_any_bit_of_the_last_record_drops_it_and_nothing_before_it() {
    let (source, stored, last_start, len) = one_segment_log(4);
    let original = fs::read(&segment_files(source.path(), "log")[0]).unwrap();
    for byte in last_start..len {
        for bit in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(source.path(), dir.path());
            let file = &segment_files(dir.path(), "log")[0];
            let mut bytes = original.clone();
            bytes[byte as usize] ^= 1 << bit;
            fs::write(file, &bytes).unwrap();

            let (log, report) = PartitionLog::open(dir.path(), config()).unwrap();
            assert_eq!(
                report.truncated_bytes,
                len - last_start,
                "byte {byte} bit {bit}"
            );
            assert_eq!(
                read_all(&log).unwrap(),
                stored[..3],
                "byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn zeroed_preallocated_tail_is_cut() {
    let (source, stored, _, len) = one_segment_log(3);
    let file = &segment_files(source.path(), "log")[0];
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len + 4_000)
        .unwrap();
    let (log, report) = PartitionLog::open(source.path(), config()).unwrap();
    assert_eq!(report.truncated_bytes, 4_000);
    assert_eq!(read_all(&log).unwrap(), stored);
}

fn multi_segment_log() -> (tempfile::TempDir, Vec<StoredRecord>) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        for chunk in records(400).chunks(9) {
            log.append_blocking(chunk.to_vec()).unwrap();
        }
        assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
    }
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let stored = read_all(&log).unwrap();
    assert_eq!(stored.len(), 400);
    (dir, stored)
}

#[test]
fn missing_or_garbage_indexes_of_sealed_segments_are_rebuilt() {
    let (dir, stored) = multi_segment_log();
    let indexes = segment_files(dir.path(), "index");
    let time_indexes = segment_files(dir.path(), "timeindex");
    fs::remove_file(&indexes[0]).unwrap();
    fs::write(&indexes[1], b"not an index at all").unwrap();
    fs::write(&time_indexes[2], [0xff; 24]).unwrap();

    let (log, report) = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(report.rebuilt_indexes.len(), 3, "{report:?}");
    assert!(report.corrupt_segments.is_empty());
    assert_eq!(read_all(&log).unwrap(), stored);
    for record in stored.iter().step_by(37) {
        let mut reader = log.reader(record.offset).unwrap();
        assert_eq!(&reader.read(1, usize::MAX).unwrap()[0], record);
        assert!(log.offset_for_time(record.timestamp).unwrap() <= record.offset);
    }
    drop(log);
    let (_, report) = PartitionLog::open(dir.path(), config()).unwrap();
    assert!(
        report.rebuilt_indexes.is_empty(),
        "rebuilt indexes are kept"
    );
}

#[test]
fn corruption_inside_a_sealed_segment_is_a_typed_error_naming_file_and_offset() {
    let (dir, stored) = multi_segment_log();
    let sealed = &segment_files(dir.path(), "log")[1];
    let mut bytes = fs::read(sealed).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x40;
    fs::write(sealed, &bytes).unwrap();

    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let mut reader = log.reader(0).unwrap();
    let mut good = Vec::new();
    let error = loop {
        match reader.read(7, usize::MAX) {
            Ok(batch) if batch.is_empty() => panic!("read past corruption"),
            Ok(batch) => good.extend(batch),
            Err(error) => break error,
        }
    };
    match error {
        LogError::Corrupt {
            file,
            expected_offset,
            ..
        } => {
            assert_eq!(&file, sealed);
            assert_eq!(expected_offset, good.len() as u64);
            assert!(error_message_names_file(&file, expected_offset));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Everything before the damaged record was served intact, nothing after it.
    assert_eq!(good, stored[..good.len()]);
}

fn error_message_names_file(file: &Path, offset: u64) -> bool {
    let message = LogError::Corrupt {
        file: file.to_path_buf(),
        position: 1,
        expected_offset: offset,
        reason: "x".into(),
    }
    .to_string();
    message.contains(&file.display().to_string()) && message.contains(&offset.to_string())
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    match PartitionLog::open(dir.path(), config()) {
        Err(LogError::Locked(path)) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second handle"),
    }
}

#[test]
fn an_oversize_record_is_refused_and_nothing_of_its_batch_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_record_bytes: 1_000,
        ..config()
    };
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let batch = vec![
        Record::new("a", vec![0; 10]),
        Record::new("b", vec![0; 2_000]),
    ];
    match log.append_blocking(batch) {
        Err(LogError::RecordTooLarge { size, limit }) => {
            assert!(size > 2_000);
            assert_eq!(limit, 1_000);
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(log.high_watermark(), 0);
    assert!(matches!(
        log.append_blocking(vec![]),
        Err(LogError::EmptyBatch)
    ));
}
