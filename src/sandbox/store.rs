//! The order store: sharded, insertion-ordered, compact (submitted JSON as `Box<str>` plus a
//! small status struct per order).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rust_decimal::Decimal;
use time::Date;

use super::hash::{DetHasher, splitmix64, unit};
use super::order::{Include, PaymentStatus, ValidOrder, write_amount, write_str};

/// Number of shards; order numbers are spread by the deterministic hash.
pub(crate) const SHARDS: usize = 64;

/// A bank posting (incoming payment) assigned to an order.
#[derive(Debug)]
pub(crate) struct Posting {
    pub(crate) id: u64,
    pub(crate) amount: Decimal,
    pub(crate) currency: [u8; 3],
    pub(crate) date: Date,
    pub(crate) originator: Box<str>,
    pub(crate) reference: Box<str>,
    pub(crate) text: Box<str>,
    pub(crate) order: Box<str>,
}

/// Refund status (§0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundStatus {
    BankDetailsMissing,
    New,
    InProcess,
    Processed,
}

impl RefundStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::BankDetailsMissing => "BANKDETAILS_MISSING",
            Self::New => "NEW",
            Self::InProcess => "IN_PROCESS",
            Self::Processed => "PROCESSED",
        }
    }

    fn next(self) -> Self {
        match self {
            Self::BankDetailsMissing => Self::New,
            Self::New => Self::InProcess,
            Self::InProcess | Self::Processed => Self::Processed,
        }
    }
}

/// A refund of an order.
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub(crate) id: u64,
    pub(crate) external_reference: String,
    pub(crate) amount: Decimal,
    pub(crate) currency: String,
    pub(crate) planned_date: Date,
    pub(crate) execution_date: Option<Date>,
    pub(crate) status: RefundStatus,
}

/// Rarely used per-order data, boxed so that plain orders stay small.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) postings: Vec<Arc<Posting>>,
    pub(crate) refunds: Vec<Refund>,
    pub(crate) invoices: Vec<(Box<str>, Box<[u8]>)>,
}

/// One stored order.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) number: Box<str>,
    pub(crate) json: Box<str>,
    pub(crate) date: Date,
    pub(crate) amount: Decimal,
    pub(crate) reference: [u8; 6],
    pub(crate) currency: [u8; 3],
    pub(crate) country: [u8; 2],
    pub(crate) status: PaymentStatus,
    pub(crate) manual_paid: bool,
    pub(crate) dunning: Option<u8>,
    pub(crate) extra: Option<Box<Extra>>,
}

/// Saturating sum (plain `Decimal` addition panics on overflow).
fn sum(amounts: impl Iterator<Item = Decimal>) -> Decimal {
    amounts.fold(Decimal::ZERO, |acc, a| acc.saturating_add(a))
}

fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

impl Record {
    pub(crate) fn reference(&self) -> &str {
        ascii(&self.reference)
    }

    pub(crate) fn country(&self) -> &str {
        ascii(&self.country)
    }

    pub(crate) fn paid(&self) -> Decimal {
        self.extra
            .as_ref()
            .map(|e| sum(e.postings.iter().map(|p| p.amount)))
            .unwrap_or_default()
    }

    fn refunded(&self) -> Decimal {
        self.extra
            .as_ref()
            .map(|e| {
                sum(e
                    .refunds
                    .iter()
                    .filter(|r| r.status == RefundStatus::Processed)
                    .map(|r| r.amount))
            })
            .unwrap_or_default()
    }

    pub(crate) fn last_posting(&self) -> Option<Date> {
        self.extra
            .as_ref()
            .and_then(|e| e.postings.iter().map(|p| p.date).max())
    }

    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The status following from postings, a manual setpaid and processed refunds.
    pub(crate) fn computed_status(&self) -> PaymentStatus {
        if self.manual_paid {
            return PaymentStatus::Paid;
        }
        let refunded = self.refunded();
        if refunded > Decimal::ZERO {
            return if refunded >= self.amount {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::RefundedPartial
            };
        }
        let paid = self.paid();
        if self.amount <= Decimal::ZERO || paid >= self.amount {
            PaymentStatus::Paid
        } else if paid > Decimal::ZERO {
            PaymentStatus::PaidPartial
        } else {
            PaymentStatus::Unpaid
        }
    }

    /// Writes the order as the API returns it.
    pub(crate) fn write_json(&self, out: &mut String, include: Include) {
        let body = self.json.strip_suffix('}').unwrap_or(&self.json);
        out.push_str(body);
        if body.len() > 1 {
            out.push(',');
        }
        out.push_str("\"referenceNumber\":\"");
        out.push_str(self.reference());
        out.push_str("\",\"paymentStatus\":\"");
        out.push_str(self.status.as_str());
        out.push('"');
        if let Some(level) = self.dunning {
            let _ = write!(out, ",\"initialDunningLevel\":{level}");
        }
        let extra = self.extra.as_deref();
        if include.postings {
            out.push_str(",\"postings\":[");
            for (i, posting) in extra
                .map(|e| &e.postings[..])
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                if i > 0 {
                    out.push(',');
                }
                write_posting(out, posting, None);
            }
            out.push(']');
        }
        if include.refunds {
            out.push_str(",\"refunds\":[");
            for (i, refund) in extra
                .map(|e| &e.refunds[..])
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                if i > 0 {
                    out.push(',');
                }
                write_refund(out, refund);
            }
            out.push(']');
        }
        if include.reminders {
            // Placeholder shape (§4.7): the sandbox sends no reminders.
            out.push_str(",\"paymentReminders\":[]");
        }
        if include.collection {
            // Placeholder shape (§4.7): the sandbox does no debt collection.
            out.push_str(",\"collectionHistory\":[]");
        }
        out.push('}');
    }
}

/// Writes a posting; `orders` is the already serialized `orders` array for `includeOrders`.
pub(crate) fn write_posting(out: &mut String, posting: &Posting, orders: Option<&str>) {
    let date = crate::dates::format_api_date(posting.date);
    let _ = write!(out, "{{\"id\":\"{}\",\"amount\":", posting.id);
    write_amount(out, posting.amount);
    out.push_str(",\"currency\":\"");
    out.push_str(ascii(&posting.currency));
    let _ = write!(
        out,
        "\",\"postingDate\":\"{date}\",\"valuationDate\":\"{date}\",\"originator\":"
    );
    write_str(out, &posting.originator);
    out.push_str(",\"reference\":");
    write_str(out, &posting.reference);
    out.push_str(",\"text\":");
    write_str(out, &posting.text);
    if let Some(orders) = orders {
        out.push_str(",\"orders\":");
        out.push_str(orders);
    }
    out.push('}');
}

/// Writes a refund as the API returns it.
pub(crate) fn write_refund(out: &mut String, refund: &Refund) {
    out.push_str("{\"externalReference\":");
    write_str(out, &refund.external_reference);
    out.push_str(",\"amount\":");
    write_amount(out, refund.amount);
    out.push_str(",\"currency\":");
    write_str(out, &refund.currency);
    let _ = write!(
        out,
        ",\"plannedDate\":\"{}\",\"id\":\"{}\",\"executionDate\":",
        crate::dates::format_api_date(refund.planned_date),
        refund.id
    );
    match refund.execution_date {
        Some(date) => {
            let _ = write!(out, "\"{}\"", crate::dates::format_api_date(date));
        }
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ",\"referenceNumber\":\"KKBT{:08}\",\"status\":\"{}\"}}",
        refund.id,
        refund.status.as_str()
    );
}

/// One shard: records in insertion order plus an index by number (orders are never deleted).
#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub(crate) index: HashMap<Box<str>, u32>,
    pub(crate) records: Vec<Record>,
}

impl Shard {
    pub(crate) fn get(&self, number: &str) -> Option<&Record> {
        self.index
            .get(number)
            .and_then(|&i| self.records.get(i as usize))
    }

    pub(crate) fn get_mut(&mut self, number: &str) -> Option<&mut Record> {
        let i = *self.index.get(number)?;
        self.records.get_mut(i as usize)
    }
}

/// All orders, postings and refunds of the sandbox shop.
#[derive(Debug)]
pub(crate) struct Store {
    seed: u64,
    pub(crate) shards: Box<[RwLock<Shard>]>,
    count: AtomicUsize,
    pub(crate) postings: RwLock<Vec<Arc<Posting>>>,
    posting_seq: AtomicU64,
    refund_seq: AtomicU64,
    refund_refs: Mutex<std::collections::HashSet<String>>,
    /// Orders with refunds that are not yet PROCESSED.
    pending_refunds: Mutex<Vec<Box<str>>>,
    tick_no: AtomicU64,
}

/// Outcome of creating a refund.
pub(crate) enum RefundOutcome {
    Created(String),
    Exists,
    InvalidAmount,
    NotFound,
}

impl Store {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            count: AtomicUsize::new(0),
            postings: RwLock::new(Vec::new()),
            posting_seq: AtomicU64::new(100_000),
            refund_seq: AtomicU64::new(30_000),
            refund_refs: Mutex::new(std::collections::HashSet::new()),
            pending_refunds: Mutex::new(Vec::new()),
            tick_no: AtomicU64::new(0),
        }
    }

    pub(crate) fn shard(&self, number: &str) -> &RwLock<Shard> {
        let h = DetHasher::new(0x5eed).bytes(number.as_bytes()).finish();
        &self.shards[(h % SHARDS as u64) as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn contains(&self, number: &str) -> bool {
        self.shard(number)
            .read()
            .map(|s| s.index.contains_key(number))
            .unwrap_or(false)
    }

    /// Runs `f` on the order, under the shard's read lock.
    pub(crate) fn read<T>(&self, number: &str, f: impl FnOnce(&Record) -> T) -> Option<T> {
        let shard = self.shard(number).read().ok()?;
        shard.get(number).map(f)
    }

    /// Runs `f` on the order, under the shard's write lock.
    pub(crate) fn write<T>(&self, number: &str, f: impl FnOnce(&mut Record) -> T) -> Option<T> {
        let mut shard = self.shard(number).write().ok()?;
        shard.get_mut(number).map(f)
    }

    fn reference_for(&self, number: &str) -> [u8; 6] {
        const ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut h = DetHasher::new(self.seed)
            .bytes(b"referenceNumber")
            .bytes(number.as_bytes())
            .finish();
        let mut reference = *b"K00000";
        for slot in reference.iter_mut().skip(1) {
            *slot = ALPHABET[(h % 36) as usize];
            h /= 36;
        }
        reference
    }

    /// Creates or updates an order and writes the stored result to `out`.
    pub(crate) fn upsert(&self, order: ValidOrder, out: &mut String, include: Include) {
        let Ok(mut shard) = self.shard(&order.number).write() else {
            return;
        };
        if let Some(record) = shard.get_mut(&order.number) {
            let amount_changed = record.amount != order.amount;
            record.json = order.json.into_boxed_str();
            record.date = order.date;
            record.amount = order.amount;
            record.currency = order.currency;
            record.country = order.country;
            // The vendor is silent on resubmitting a closed order. LEGACY and DISAPPEARED mean
            // "no longer tracked"; an order the shop sends again is tracked again. CANCELLED
            // stays: the vendor recommends resending every open order daily, and an invoice
            // order becomes CANCELLED automatically when overdue, so reviving it would undo
            // every such cancellation the next night.
            let revive = matches!(
                record.status,
                PaymentStatus::Legacy | PaymentStatus::Disappeared
            );
            let recompute = amount_changed
                && matches!(
                    record.status,
                    PaymentStatus::Unpaid | PaymentStatus::Paid | PaymentStatus::PaidPartial
                );
            if revive || recompute {
                record.status = record.computed_status();
            }
            record.write_json(out, include);
            return;
        }
        let record = Record {
            reference: self.reference_for(&order.number),
            number: order.number.into_boxed_str(),
            json: order.json.into_boxed_str(),
            date: order.date,
            status: if order.amount <= Decimal::ZERO {
                PaymentStatus::Paid
            } else {
                PaymentStatus::Unpaid
            },
            amount: order.amount,
            currency: order.currency,
            country: order.country,
            manual_paid: false,
            dunning: order.dunning,
            extra: None,
        };
        record.write_json(out, include);
        let i = shard.records.len() as u32;
        shard.index.insert(record.number.clone(), i);
        shard.records.push(record);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Assigns a posting to the order `record` (caller holds the shard's write lock).
    fn add_posting(&self, record: &mut Record, amount: Decimal, today: Date) -> Arc<Posting> {
        let posting = Arc::new(Posting {
            id: self.posting_seq.fetch_add(1, Ordering::Relaxed),
            amount,
            currency: record.currency,
            date: today,
            originator: "Erika Sandbox".into(),
            reference: record.reference().into(),
            text: format!("{} {}", record.reference(), record.number).into(),
            order: record.number.clone(),
        });
        record.extra_mut().postings.push(Arc::clone(&posting));
        posting
    }

    fn publish(&self, postings: Vec<Arc<Posting>>) {
        if postings.is_empty() {
            return;
        }
        if let Ok(mut list) = self.postings.write() {
            list.extend(postings);
        }
    }

    /// Control endpoint: a payment of `amount` arrives for `number` (§6 rule 3).
    pub(crate) fn pay(&self, number: &str, amount: Decimal, today: Date) -> Option<String> {
        let (posting, status) = {
            let mut shard = self.shard(number).write().ok()?;
            let record = shard.get_mut(number)?;
            let posting = self.add_posting(record, amount, today);
            if !record.manual_paid {
                record.status = record.computed_status();
            }
            (posting, record.status)
        };
        self.publish(vec![posting]);
        Some(status.as_str().to_owned())
    }

    /// Creates a refund after the caller checked the date and the required fields.
    pub(crate) fn create_refund(
        &self,
        number: &str,
        external_reference: &str,
        amount: Decimal,
        currency: &str,
        planned_date: Date,
    ) -> RefundOutcome {
        let Ok(mut shard) = self.shard(number).write() else {
            return RefundOutcome::NotFound;
        };
        let Some(record) = shard.get_mut(number) else {
            return RefundOutcome::NotFound;
        };
        let Ok(mut refs) = self.refund_refs.lock() else {
            return RefundOutcome::NotFound;
        };
        if refs.contains(external_reference) {
            return RefundOutcome::Exists;
        }
        let max = record
            .amount
            .saturating_mul(Decimal::TWO)
            .max(record.paid());
        if amount <= Decimal::ZERO || amount > max {
            return RefundOutcome::InvalidAmount;
        }
        refs.insert(external_reference.to_owned());
        drop(refs);
        let start = if DetHasher::new(self.seed)
            .bytes(b"refund")
            .bytes(external_reference.as_bytes())
            .finish()
            & 1
            == 0
        {
            RefundStatus::BankDetailsMissing
        } else {
            RefundStatus::New
        };
        let refund = Refund {
            id: self.refund_seq.fetch_add(1, Ordering::Relaxed),
            external_reference: external_reference.to_owned(),
            amount: amount.round_dp(2),
            currency: currency.to_owned(),
            planned_date,
            execution_date: None,
            status: start,
        };
        let mut out = String::new();
        write_refund(&mut out, &refund);
        record.extra_mut().refunds.push(refund);
        drop(shard);
        if let Ok(mut pending) = self.pending_refunds.lock() {
            pending.push(number.into());
        }
        RefundOutcome::Created(out)
    }

    /// One payment round (see the module docs of `sandbox`); returns the number of orders
    /// whose payments, status or refunds changed.
    pub(crate) fn tick(&self, pay_rate: f64, today: Date) -> usize {
        let tick_no = self.tick_no.fetch_add(1, Ordering::Relaxed);
        let mut changed = 0;
        let mut new_postings = Vec::new();
        if pay_rate > 0.0 {
            for shard in self.shards.iter() {
                let Ok(mut shard) = shard.write() else {
                    continue;
                };
                for record in shard.records.iter_mut() {
                    if !record.status.is_open() {
                        continue;
                    }
                    let h = DetHasher::new(self.seed)
                        .bytes(b"pay")
                        .bytes(record.number.as_bytes())
                        .u64(tick_no)
                        .finish();
                    if unit(h) >= pay_rate {
                        continue;
                    }
                    changed += 1;
                    let outcome = splitmix64(h) % 100;
                    let remaining = record.amount.saturating_sub(record.paid());
                    if outcome >= 90 {
                        record.status = PaymentStatus::Cancelled;
                        continue;
                    }
                    let half = (remaining / Decimal::TWO).round_dp(2);
                    let amount = if outcome >= 70 && half > Decimal::ZERO && half < remaining {
                        half
                    } else {
                        remaining
                    };
                    if amount > Decimal::ZERO {
                        new_postings.push(self.add_posting(record, amount, today));
                    }
                    record.status = record.computed_status();
                }
            }
        }
        self.publish(new_postings);
        changed + self.advance_refunds(today)
    }

    fn advance_refunds(&self, today: Date) -> usize {
        let pending = match self.pending_refunds.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return 0,
        };
        let mut still = Vec::new();
        let mut changed = 0;
        for number in pending {
            if still.contains(&number) {
                continue;
            }
            let open = self
                .write(&number, |record| {
                    let mut open = false;
                    let mut processed = false;
                    for refund in record.extra_mut().refunds.iter_mut() {
                        if refund.status != RefundStatus::Processed {
                            refund.status = refund.status.next();
                            if refund.status == RefundStatus::Processed {
                                refund.execution_date = Some(today);
                                processed = true;
                            } else {
                                open = true;
                            }
                        }
                    }
                    if processed && !record.manual_paid {
                        record.status = record.computed_status();
                    }
                    open
                })
                .unwrap_or(false);
            changed += 1;
            if open {
                still.push(number);
            }
        }
        if let Ok(mut pending) = self.pending_refunds.lock() {
            pending.extend(still);
        }
        changed
    }

    /// Open orders missing from `keep` (the ones `/ordersync` would retire).
    pub(crate) fn sync_candidates(&self, keep: &std::collections::HashSet<&str>) -> Vec<Box<str>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let Ok(shard) = shard.read() else {
                continue;
            };
            out.extend(
                shard
                    .records
                    .iter()
                    .filter(|r| r.status.is_open() && !keep.contains(&*r.number))
                    .map(|r| r.number.clone()),
            );
        }
        out
    }
}
