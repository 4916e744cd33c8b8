//! Monthly partitions of `sessiond_events`: made before the first event of a month is
//! written, dropped whole once retention has passed them (no row-by-row delete, no bloat).

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;
use sessiond_core::Timestamp;

use crate::error::TierError;
use crate::migrations::LOCK;

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Month {
    year: i32,
    month: u8,
}

impl Month {
    /// The month `at` falls in.
    pub(crate) fn of(at: Timestamp) -> Month {
        let secs = i64::try_from(at.as_millis() / 1000).unwrap_or(i64::MAX);
        let date = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .date();
        Month {
            year: date.year(),
            month: u8::from(date.month()),
        }
    }

    fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Its partition's name.
    pub(crate) fn table(self) -> String {
        format!("sessiond_events_y{:04}m{:02}", self.year, self.month)
    }

    /// Parses a partition's name back.
    fn from_table(name: &str) -> Option<Month> {
        let rest = name.strip_prefix("sessiond_events_y")?;
        let (year, month) = rest.split_once('m')?;
        let month: u8 = month.parse().ok()?;
        (1..=12).contains(&month).then_some(Month {
            year: year.parse().ok()?,
            month,
        })
    }

    fn start(self) -> String {
        format!("{:04}-{:02}-01 00:00:00+00", self.year, self.month)
    }
}

/// Makes the partitions of `months` that do not exist yet, under the schema lock (two
/// processes making the same partition would otherwise race).
pub(crate) async fn ensure(
    client: &mut deadpool_postgres::Client,
    months: &BTreeSet<Month>,
) -> Result<(), TierError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    for month in months {
        // Names and bounds are made here from numbers, never from input.
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} PARTITION OF sessiond_events \
             FOR VALUES FROM ('{from}') TO ('{to}')",
            table = month.table(),
            from = month.start(),
            to = month.next().start(),
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The months that have a partition.
pub(crate) async fn existing(client: &impl GenericClient) -> Result<Vec<Month>, TierError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'sessiond_events'",
            &[],
        )
        .await?;
    let mut months = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        if let Some(month) = Month::from_table(&name) {
            months.push(month);
        }
    }
    months.sort();
    Ok(months)
}

/// Drops every partition whose whole month is older than `cutoff`; returns how many rows
/// they held.
pub(crate) async fn drop_before(
    client: &mut deadpool_postgres::Client,
    cutoff: Timestamp,
) -> Result<u64, TierError> {
    let keep_from = Month::of(cutoff);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    let mut rows = 0u64;
    for month in existing(&tx).await? {
        // A month is dropped only when the month after it starts at or before the cutoff.
        if month.next() <= keep_from {
            let table = month.table();
            let count: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await?
                .try_get(0)?;
            tx.batch_execute(&format!("DROP TABLE {table}")).await?;
            rows += u64::try_from(count).unwrap_or(0);
        }
    }
    tx.commit().await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_name_their_partitions_and_parse_back() {
        // 2026-12-31T23:59:59.999Z and the next millisecond.
        let last = Month::of(Timestamp::from_millis(1_798_761_599_999));
        let first = Month::of(Timestamp::from_millis(1_798_761_600_000));
        assert_eq!(last.table(), "sessiond_events_y2026m12");
        assert_eq!(first.table(), "sessiond_events_y2027m01");
        assert_eq!(last.next(), first);
        assert_eq!(Month::from_table(&last.table()), Some(last));
        assert_eq!(Month::from_table("sessiond_events_y2026m13"), None);
        assert_eq!(Month::from_table("other"), None);
        assert_eq!(first.start(), "2027-01-01 00:00:00+00");
    }
}
