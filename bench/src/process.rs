//! What Linux's /proc says about a process (the server under test, or the load generator
//! itself) and about the machine: resident memory, CPU time, open files, load average.
//!
//! Every reading is optional: on another OS, or for a process that went away, the reports
//! simply leave the figure out.

use std::{fs, io, path::PathBuf};

use serde::Serialize;

/// Clock ticks per second of /proc/PID/stat's CPU times (Linux's USER_HZ, 100 on every
/// mainstream architecture; reading it properly would need libc's sysconf).
const TICKS_PER_SECOND: f64 = 100.0;

/// Which process to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The load generator itself.
    Myself,
    /// Another process, by id.
    Pid(u32),
}

impl Process {
    fn dir(self) -> PathBuf {
        match self {
            Process::Myself => PathBuf::from("/proc/self"),
            Process::Pid(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(self) -> io::Result<u64> {
        let status = fs::read_to_string(self.dir().join("status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .ok_or_else(|| io::Error::other("no VmRSS line in /proc/PID/status"))
    }

    /// User plus system CPU time consumed so far, in seconds, all threads together.
    pub fn cpu_seconds(self) -> io::Result<f64> {
        let stat = fs::read_to_string(self.dir().join("stat"))?;
        // The command name (field 2) is in parentheses and may contain spaces: count fields
        // from the last ')'. utime and stime are fields 14 and 15, i.e. the 12th and 13th
        // after the name.
        let after_name = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))?;
        let mut fields = after_name.split_whitespace().skip(11);
        let mut tick = || -> io::Result<f64> {
            fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v as f64 / TICKS_PER_SECOND)
                .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))
        };
        Ok(tick()? + tick()?)
    }

    /// Number of open file descriptors (sockets included).
    pub fn open_files(self) -> io::Result<usize> {
        Ok(fs::read_dir(self.dir().join("fd"))?.count())
    }

    /// A reading of memory and CPU time now.
    pub fn sample(self) -> Option<Sample> {
        Some(Sample {
            rss_kib: self.rss_kib().ok()?,
            cpu_seconds: self.cpu_seconds().ok()?,
        })
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// CPU time consumed since the process started, seconds.
    pub cpu_seconds: f64,
}

impl Sample {
    /// CPU cores used on average between `self` and a later sample taken `seconds` after.
    pub fn cores_until(&self, later: &Sample, seconds: f64) -> f64 {
        if seconds <= 0.0 {
            return 0.0;
        }
        self.cpu_seconds_until(later) / seconds
    }

    /// CPU time consumed between `self` and a later sample, seconds.
    pub fn cpu_seconds_until(&self, later: &Sample) -> f64 {
        (later.cpu_seconds - self.cpu_seconds).max(0.0)
    }
}

/// Raises this process's soft limit of open files to its hard limit (each connection is a
/// file); returns the limit now in force, if it could be read.
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut values = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([values.next()??, values.next()??, values.next()??])
}

/// Total memory of the machine in MiB.
pub fn memory_mib() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The machine's CPU model name.
pub fn cpu_model() -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return; // Not Linux.
        }
        let sample = Process::Myself.sample().expect("readable /proc/self");
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_seconds >= 0.0);
        assert!(Process::Myself.open_files().expect("fd dir") > 0);
        assert!(load_average().is_some());
        assert!(memory_mib().is_some_and(|m| m > 0));
    }
}
