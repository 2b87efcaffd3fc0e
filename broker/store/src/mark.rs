//! The store's high-water mark: how many writes it has acknowledged, in a small file beside
//! its folder and written independently of it. A store whose own count is below the mark has
//! lost writes it promised to keep (a damaged segment sled skipped on recovery, a folder
//! restored from an older copy), and must not be run on as if nothing happened.
//!
//! The file is two fixed-width text lines (slots), each a count and a checksum of it:
//!
//! ```text
//! acknowledged_writes 00000000000000000060 check 5f0c3e8a1b2d4c6e
//! acknowledged_writes 00000000000000000057 check 0a1b2c3d4e5f6a7b
//! ```
//!
//! The mark is the highest count of a slot whose checksum holds. An update overwrites the
//! other slot in place and syncs the data only: the file keeps its size and name, so no
//! metadata has to reach the disk, which keeps the cost of a mark to one data sync on the
//! write path. A crash that tears the slot being written leaves the other one, whose count
//! is lower and so still below the store's.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

/// `acknowledged_writes ` + 20 digits + ` check ` + 16 hex digits + `\n`.
const SLOT_LEN: usize = 20 + 20 + 7 + 16 + 1;
const SLOTS: u64 = 2;

/// The mark file of one store: `<store folder>.mark`, beside the folder rather than in it, so
/// that a store folder deleted or replaced as a whole is noticed too.
pub(crate) struct Mark {
    path: PathBuf,
    /// Open for writing once [`Mark::open`] returned.
    file: Option<File>,
    /// The slot the next update overwrites: the one not holding the mark.
    next_slot: AtomicU64,
}

impl Mark {
    /// The mark of the store folder `store`, which must exist (its name is resolved).
    pub(crate) fn beside(store: &Path) -> Result<Mark, StoreError> {
        let resolved = fs::canonicalize(store)
            .map_err(|e| StoreError::backend(store.display().to_string(), e))?;
        // A canonical path of a folder other than `/` has both; `/` cannot hold a store.
        let (Some(folder), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return Err(StoreError::backend(
                store.display().to_string(),
                "a store cannot be the root folder: its mark goes beside it",
            ));
        };
        Ok(Mark {
            path: folder.join(format!("{}.mark", name.to_string_lossy())),
            file: None,
            next_slot: AtomicU64::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The acknowledged writes the mark records; None if there is no mark yet (a new store, or
    /// one written before marks existed).
    pub(crate) fn read(&self) -> Result<Option<u64>, StoreError> {
        let content = match fs::read(&self.path) {
            Ok(content) => content,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        let unreadable = |reason: &str| StoreError::UnreadableMark {
            mark: self.path.display().to_string(),
            reason: reason.to_string(),
        };
        if content.len() != SLOT_LEN * 2 {
            return Err(unreadable("it is not two slots long"));
        }
        content
            .chunks(SLOT_LEN)
            .filter_map(parse_slot)
            .max()
            .map(Some)
            .ok_or_else(|| unreadable("neither slot holds a count with a valid checksum"))
    }

    /// Makes the mark `writes` (the store's own count when it opens), replacing the file
    /// atomically (write aside, sync, rename, sync the folder), and keeps it open for
    /// [`Mark::update`].
    pub(crate) fn open(&mut self, writes: u64) -> Result<(), StoreError> {
        let folder = self.path.parent().unwrap_or(Path::new("."));
        let aside = self.path.with_extension("mark.tmp");
        let mut content = slot(writes);
        content.push_str(&slot(writes));
        let at = |path: &Path| {
            let path = path.display().to_string();
            move |e| StoreError::backend(path, e)
        };
        let mut file = File::create(&aside).map_err(at(&aside))?;
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(at(&aside))?;
        fs::rename(&aside, &self.path).map_err(at(&self.path))?;
        File::open(folder)
            .and_then(|folder| folder.sync_all())
            .map_err(at(folder))?;
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| self.fail(e))?;
        self.file = Some(file);
        Ok(())
    }

    /// Raises the mark to `writes`, durably, in the slot not holding the current mark. Only
    /// one update runs at a time (the store holds a lock around it).
    pub(crate) fn update(&self, writes: u64) -> Result<(), StoreError> {
        let Some(file) = &self.file else {
            return Err(self.fail(io::Error::other("the mark was not opened")));
        };
        let slot_index = self.next_slot.load(Ordering::Relaxed);
        // SLOT_LEN is a small constant: the offset is at most SLOT_LEN.
        let offset = slot_index * SLOT_LEN as u64;
        file.write_all_at(slot(writes).as_bytes(), offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| self.fail(e))?;
        self.next_slot
            .store((slot_index + 1) % SLOTS, Ordering::Relaxed);
        Ok(())
    }

    fn fail(&self, error: io::Error) -> StoreError {
        StoreError::backend(self.path.display().to_string(), error)
    }
}

fn slot(writes: u64) -> String {
    let digits = format!("{writes:020}");
    format!(
        "acknowledged_writes {digits} check {:016x}\n",
        checksum(&digits)
    )
}

/// The count of a slot, if it is whole and its checksum holds.
fn parse_slot(slot: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(slot).ok()?;
    let rest = text.strip_prefix("acknowledged_writes ")?;
    let (digits, rest) = rest.split_once(" check ")?;
    let check = u64::from_str_radix(rest.strip_suffix('\n')?, 16).ok()?;
    (checksum(digits) == check).then(|| digits.parse().ok())?
}

/// FNV-1a: enough to tell a torn or scribbled slot from a written one.
fn checksum(digits: &str) -> u64 {
    digits.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_reads_back_and_a_torn_one_does_not() {
        let written = slot(60);
        assert_eq!(written.len(), SLOT_LEN);
        assert_eq!(parse_slot(written.as_bytes()), Some(60));
        let mut torn = written.clone().into_bytes();
        torn[30] = b'9';
        assert_eq!(parse_slot(&torn), None, "a changed digit");
        // The digits of the two counts differ on both sides of the tear.
        let mut half = written.clone().into_bytes();
        half[SLOT_LEN / 2..]
            .copy_from_slice(&slot(1_000_000_000_000_001).as_bytes()[SLOT_LEN / 2..]);
        assert_eq!(parse_slot(&half), None, "half of one, half of another");
        assert_eq!(parse_slot(&[0; SLOT_LEN]), None);
    }
}
