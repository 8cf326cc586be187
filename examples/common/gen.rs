//! Deterministic generator of realistic German shop order exports, shared by the `gen_orders`
//! and `bench` examples (included with `#[path = "common/gen.rs"] mod order_gen;` because `gen`
//! is a reserved keyword in edition 2024).
//!
//! One CSV row per order; the columns are the Komfortkasse API field names (nested objects
//! flattened with a dot), followed by two shop-specific columns that kksync must carry through
//! untouched. See `examples/README.md` for the text forms.
//!
//! Output is a pure function of the [`Config`] (including `today`): the same arguments on the
//! same day give byte-identical files (with the `rand` version pinned in `Cargo.lock`). Rows are
//! written one at a time into reused buffers, so memory use does not depend on the row count.
//! Invalid rows draw from a separate random stream, so a file generated with `invalid_every` is
//! the file generated without it, except for the defective rows.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use time::{Date, Duration};

/// The header row, in output order.
pub const HEADER: [&str; COLUMNS] = [
    "number",
    "date",
    "dueDate",
    "type",
    "amount",
    "currency",
    "customerEmail",
    "customerNumber",
    "language",
    "paymentMethod",
    "paymentMethodDescription",
    "statusDescription",
    "billing.gender",
    "billing.company",
    "billing.firstName",
    "billing.lastName",
    "billing.street",
    "billing.postCode",
    "billing.city",
    "billing.countryCode",
    "billing.phone",
    "shipping.gender",
    "shipping.company",
    "shipping.firstName",
    "shipping.lastName",
    "shipping.street",
    "shipping.postCode",
    "shipping.city",
    "shipping.countryCode",
    "items",
    "invoiceNumbers",
    "shippingNumbers",
    "initialDunningLevel",
    "lagerort",
    "interneNotiz",
];

const COLUMNS: usize = 35;

// Column indexes into a row.
const NUMBER: usize = 0;
const DATE: usize = 1;
const DUE_DATE: usize = 2;
const TYPE: usize = 3;
const AMOUNT: usize = 4;
const CURRENCY: usize = 5;
const EMAIL: usize = 6;
const CUSTOMER_NUMBER: usize = 7;
const LANGUAGE: usize = 8;
const PAYMENT_METHOD: usize = 9;
const PAYMENT_METHOD_DESCRIPTION: usize = 10;
const STATUS_DESCRIPTION: usize = 11;
const BILLING: usize = 12; // gender, company, firstName, lastName, street, postCode, city, countryCode, phone
const BILLING_COUNTRY: usize = BILLING + 7;
const SHIPPING: usize = 21; // gender, company, firstName, lastName, street, postCode, city, countryCode
const ITEMS: usize = 29;
const INVOICE_NUMBERS: usize = 30;
const SHIPPING_NUMBERS: usize = 31;
const INITIAL_DUNNING_LEVEL: usize = 32;
const LAGERORT: usize = 33;
const INTERNE_NOTIZ: usize = 34;

/// Number of distinct defects `invalid_every` cycles through.
pub const DEFECT_KINDS: u64 = 10;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of order rows (the header is extra).
    pub rows: u64,
    /// Seed of the random streams.
    pub seed: u64,
    /// Field delimiter, `b';'` or `b','`.
    pub delimiter: u8,
    /// Write amounts as `22,38` instead of `22.38`.
    pub decimal_comma: bool,
    /// Every K-th row (1-based: rows K, 2K, ...) gets one defect; `None` for none.
    pub invalid_every: Option<u64>,
    /// Start the file with a UTF-8 byte order mark.
    pub bom: bool,
    /// Write every date as `dd-MM-yyyy`; otherwise about 5 % of the rows use `yyyy-MM-dd`.
    pub strict_dates: bool,
    /// For files that are committed and used for months: order dates only within the last 60
    /// days (instead of 90), and the time-relative defects (future date, dueDate too far ahead)
    /// put ten years ahead instead of 30 days / 8 months, so they stay defects.
    pub long_lived: bool,
    /// The day the file is generated for. No valid row has a date after it.
    pub today: Date,
}

impl Config {
    /// The benchmark's file: `rows` valid orders, seed 42, `,`, every date `dd-MM-yyyy`, as of
    /// today. `bench` and `floor` measure the same input this way.
    #[allow(dead_code)] // gen_orders, which shares this module, builds its own from flags
    pub fn benchmark(rows: u64) -> Config {
        Config {
            rows,
            seed: 42,
            delimiter: b',',
            decimal_comma: false,
            invalid_every: None,
            bom: false,
            strict_dates: true,
            long_lived: false,
            today: time::OffsetDateTime::now_utc().date(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Order rows written.
    pub rows: u64,
    /// Rows that carry a deliberate defect.
    pub invalid: u64,
}

/// Writes the header and `config.rows` orders to `out` (buffered internally).
pub fn generate<W: Write>(config: &Config, out: W) -> Result<Summary, Box<dyn Error>> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    if config.bom {
        out.write_all("\u{feff}".as_bytes())?;
    }
    let mut writer = csv::WriterBuilder::new()
        .delimiter(config.delimiter)
        .from_writer(out);
    writer.write_record(HEADER)?;

    let mut generator = Generator::new(config);
    let mut row = Row::default();
    let mut invalid = 0;
    for index in 0..config.rows {
        generator.fill(index, &mut row)?;
        if generator.apply_defect(index, &mut row)? {
            invalid += 1;
        }
        writer.write_record(&row.fields)?;
    }
    let out = writer.into_inner().map_err(|e| e.into_error())?;
    out.into_inner().map_err(|e| e.into_error())?.flush()?;
    Ok(Summary {
        rows: config.rows,
        invalid,
    })
}

struct Row {
    fields: [String; COLUMNS],
}

impl Default for Row {
    fn default() -> Self {
        Row {
            fields: std::array::from_fn(|_| String::with_capacity(64)),
        }
    }
}

impl Row {
    fn clear(&mut self) {
        self.fields.iter_mut().for_each(String::clear);
    }
    fn set(&mut self, column: usize, value: &str) {
        let field = &mut self.fields[column];
        field.clear();
        field.push_str(value);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OrderType {
    Prepayment,
    Invoice,
    Cod,
}

struct Generator<'a> {
    config: &'a Config,
    rng: StdRng,
    defect_rng: StdRng,
    window_days: u64,
    counter_year: i32,
    counter: u64,
    invoice_counter: u64,
    /// The most recent order numbers (bounded), the pool for the duplicate-number defect.
    recent_numbers: VecDeque<String>,
    scratch: String,
}

const RECENT_NUMBERS: usize = 256;

impl<'a> Generator<'a> {
    fn new(config: &'a Config) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let counter = rng.random_range(100..900);
        let invoice_counter = rng.random_range(1000..9000);
        Generator {
            config,
            rng,
            defect_rng: StdRng::seed_from_u64(config.seed ^ 0x6b6b_7379_6e63_0001),
            window_days: if config.long_lived { 60 } else { 90 },
            counter_year: 0,
            counter,
            invoice_counter,
            recent_numbers: VecDeque::with_capacity(RECENT_NUMBERS),
            scratch: String::new(),
        }
    }

    fn percent(&mut self, p: u32) -> bool {
        self.rng.random_range(0..100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    /// The order date of row `index`: exports are sorted by order number, so dates rise from
    /// `today - (window - 1)` at the first row to `today` at the last.
    fn order_date(&self, index: u64) -> Date {
        let rows = self.config.rows.max(1);
        let days_back = (self.window_days - 1) - (index * self.window_days / rows);
        self.config.today - Duration::days(days_back as i64)
    }

    fn fill(&mut self, index: u64, row: &mut Row) -> Result<(), std::fmt::Error> {
        row.clear();
        let date = self.order_date(index);
        // Order numbers restart every year, like most shop systems do.
        if date.year() != self.counter_year {
            if self.counter_year != 0 {
                self.counter = 1;
            }
            self.counter_year = date.year();
        }
        let f = &mut row.fields;
        write!(f[NUMBER], "{}-{:06}", date.year(), self.counter)?;
        self.counter += 1;
        let mut recent = if self.recent_numbers.len() == RECENT_NUMBERS {
            self.recent_numbers.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        recent.clone_from(&f[NUMBER]);
        self.recent_numbers.push_back(recent);

        let iso = self.percent(5) && !self.config.strict_dates;
        write_date(&mut f[DATE], date, iso)?;

        let order_type = match self.rng.random_range(0..100) {
            0..48 => OrderType::Prepayment,
            48..88 => OrderType::Invoice,
            _ => OrderType::Cod,
        };
        if order_type == OrderType::Invoice {
            write_date(&mut f[DUE_DATE], date + Duration::days(14), iso)?;
        }
        let (type_text, method, method_text) = match order_type {
            OrderType::Prepayment => ("PREPAYMENT", "prepayment", "Vorkasse"),
            OrderType::Invoice => ("INVOICE", "invoice", "Kauf auf Rechnung"),
            OrderType::Cod => ("COD", "cod", "Nachnahme"),
        };
        f[TYPE].push_str(type_text);
        f[PAYMENT_METHOD].push_str(method);
        f[PAYMENT_METHOD_DESCRIPTION].push_str(method_text);

        // Amount 4.99 .. 899.00, mostly small baskets; written with exactly two decimals.
        let cents: i64 = match self.rng.random_range(0..100) {
            0..55 => self.rng.random_range(499..8000),
            55..90 => self.rng.random_range(8000..30000),
            _ => self.rng.random_range(30000..=89900),
        };
        write_amount(
            &mut f[AMOUNT],
            Decimal::new(cents, 2),
            self.config.decimal_comma,
        )?;

        // Billing address.
        let country = match self.rng.random_range(0..100) {
            0..88 => Country::De,
            88..95 => Country::At,
            _ => Country::Ch,
        };
        f[CURRENCY].push_str(if country == Country::Ch { "CHF" } else { "EUR" });
        let billing = self.person(country);
        let company_customer = self.percent(8);
        f[BILLING].push_str(if company_customer {
            "company"
        } else if billing.female {
            "female"
        } else {
            "male"
        });
        if company_customer {
            let company = self.pick(COMPANIES);
            f[BILLING + 1].push_str(company);
        }
        f[BILLING + 2].push_str(billing.first);
        f[BILLING + 3].push_str(billing.last);
        self.street(country, &mut f[BILLING + 4])?;
        let place = self.pick(country.places());
        f[BILLING + 5].push_str(place.postcode);
        f[BILLING + 6].push_str(place.city);
        f[BILLING + 7].push_str(country.code());
        if self.percent(70) {
            write!(
                f[BILLING + 8],
                "{} {} 555{:04}",
                country.dialling_code(),
                place.area_code,
                self.rng.random_range(0..10_000)
            )?;
        }

        // Customer.
        if !self.percent(1) {
            self.email(&billing, &mut f[EMAIL])?;
        }
        match self.rng.random_range(0..100) {
            0..80 => write!(
                f[CUSTOMER_NUMBER],
                "K-{:05}",
                self.rng.random_range(10_000..100_000)
            )?,
            80..85 => write!(
                f[CUSTOMER_NUMBER],
                "{}/ebay_{}{}",
                self.rng.random_range(1000..10_000),
                ascii_lower(billing.last, &mut self.scratch),
                self.rng.random_range(10..100)
            )?,
            _ => {} // guest order
        }
        f[LANGUAGE].push_str("de");

        // Shipping address on about 30 % of the orders.
        if self.percent(30) {
            let ship_country = if self.percent(90) {
                country
            } else {
                self.pick(&[Country::De, Country::At, Country::Ch])
            };
            if self.percent(25) {
                f[SHIPPING].push_str("company");
                let company = self.pick(COMPANIES);
                f[SHIPPING + 1].push_str(company);
            } else {
                let recipient = if self.percent(50) {
                    billing
                } else {
                    self.person(ship_country)
                };
                f[SHIPPING].push_str(if recipient.female { "female" } else { "male" });
                f[SHIPPING + 2].push_str(recipient.first);
                f[SHIPPING + 3].push_str(recipient.last);
            }
            self.street(ship_country, &mut f[SHIPPING + 4])?;
            let place = self.pick(ship_country.places());
            f[SHIPPING + 5].push_str(place.postcode);
            f[SHIPPING + 6].push_str(place.city);
            f[SHIPPING + 7].push_str(ship_country.code());
        }

        // Items: `number:name` pairs separated by `|`.
        let products = self.rng.random_range(1..=4);
        for n in 0..products {
            if n > 0 {
                f[ITEMS].push('|');
            }
            let (sku, name) = self.pick(PRODUCTS);
            write!(f[ITEMS], "{sku}:{name}")?;
        }
        if order_type == OrderType::Cod {
            f[ITEMS].push_str("|COD-FEE:Nachnahmegebühr");
        }
        if self.percent(70) {
            let abroad = f[BILLING_COUNTRY] != "DE"
                || !(f[SHIPPING + 7].is_empty() || f[SHIPPING + 7] == "DE");
            let (sku, name) = if abroad {
                ("SHIP-INT", "Versand Ausland")
            } else {
                self.pick(&[
                    ("SHIP-STD", "Versandkosten Standard"),
                    ("SHIP-EXP", "Expressversand"),
                ])
            };
            write!(f[ITEMS], "|{sku}:{name}")?;
        }

        // Status, invoice and tracking numbers.
        let shipped = match order_type {
            OrderType::Prepayment => self.percent(20),
            OrderType::Invoice | OrderType::Cod => self.percent(70),
        };
        let status = if shipped {
            "versendet"
        } else if order_type == OrderType::Prepayment {
            self.pick(&["offen", "Zahlung ausstehend", "in Bearbeitung"])
        } else {
            "in Bearbeitung"
        };
        f[STATUS_DESCRIPTION].push_str(status);
        if order_type == OrderType::Invoice || self.percent(40) {
            let invoices = if self.percent(5) { 2 } else { 1 };
            for n in 0..invoices {
                if n > 0 {
                    f[INVOICE_NUMBERS].push('|');
                }
                write!(
                    f[INVOICE_NUMBERS],
                    "RE-{}-{:06}",
                    date.year(),
                    self.invoice_counter
                )?;
                self.invoice_counter += 1;
            }
        }
        if shipped {
            let parcels = if self.percent(10) { 2 } else { 1 };
            for n in 0..parcels {
                if n > 0 {
                    f[SHIPPING_NUMBERS].push('|');
                }
                write!(
                    f[SHIPPING_NUMBERS],
                    "00340434{:012}",
                    self.rng.random_range(0..1_000_000_000_000u64)
                )?;
            }
        }

        match self.rng.random_range(0..100) {
            0..55 => {}
            55..99 => f[INITIAL_DUNNING_LEVEL].push('0'),
            _ => f[INITIAL_DUNNING_LEVEL].push('1'),
        }

        // Shop-specific columns.
        if self.percent(85) {
            let lagerort = self.pick(LAGERORTE);
            f[LAGERORT].push_str(lagerort);
        }
        if self.percent(35) {
            let note = self.pick(NOTES);
            f[INTERNE_NOTIZ].push_str(note);
        }
        Ok(())
    }

    /// Gives row `index` its defect, if it is due one. Uses only `defect_rng`.
    fn apply_defect(&mut self, index: u64, row: &mut Row) -> Result<bool, std::fmt::Error> {
        let Some(every) = self.config.invalid_every.filter(|&k| k > 0) else {
            return Ok(false);
        };
        let position = index + 1;
        if !position.is_multiple_of(every) {
            return Ok(false);
        }
        let today = self.config.today;
        let far = Duration::days(3653); // about ten years, for long-lived files
        let f = &mut row.fields;
        match (position / every - 1) % DEFECT_KINDS {
            0 => {
                f[DATE].clear();
                write!(f[DATE], "31-02-{}", today.year())?;
            }
            1 => {
                let ahead = if self.config.long_lived {
                    far
                } else {
                    Duration::days(30)
                };
                let iso = is_iso(&f[DATE]);
                f[DATE].clear();
                write_date(&mut f[DATE], today + ahead, iso)?;
            }
            2 => row.set(
                AMOUNT,
                if self.config.decimal_comma {
                    "-5,00"
                } else {
                    "-5.00"
                },
            ),
            3 => row.set(
                AMOUNT,
                if self.config.decimal_comma {
                    "12,345"
                } else {
                    "12.345"
                },
            ),
            4 => row.set(TYPE, "PAYPAL"),
            5 => row.set(BILLING_COUNTRY, ""),
            6 => row.set(CURRENCY, "EURO"),
            7 => {
                // A number that an earlier row already used (the current row is the newest
                // entry of the pool, so leave it out).
                let earlier = self.recent_numbers.len().saturating_sub(1);
                if earlier > 0 {
                    let pick = self.defect_rng.random_range(0..earlier);
                    if let Some(number) = self.recent_numbers.get(pick) {
                        row.fields[NUMBER].clone_from(number);
                    }
                    self.recent_numbers.pop_back();
                } else {
                    // No earlier row (invalid_every = 1 on a tiny file): fall back to a defect
                    // that needs none.
                    row.set(CURRENCY, "EURO");
                }
            }
            8 => {
                let due = if self.config.long_lived {
                    today + far
                } else {
                    kksync::dates::add_months(today, 8)
                };
                let iso = is_iso(&f[DATE]);
                f[DUE_DATE].clear();
                write_date(&mut f[DUE_DATE], due, iso)?;
            }
            _ => row.set(BILLING_COUNTRY, "DEU"),
        }
        Ok(true)
    }

    fn person(&mut self, country: Country) -> Person {
        let female = self.percent(52);
        let first = if female {
            self.pick(FEMALE_FIRST_NAMES)
        } else {
            self.pick(MALE_FIRST_NAMES)
        };
        let last = match country {
            Country::Ch if self.percent(40) => self.pick(SWISS_LAST_NAMES),
            _ => self.pick(LAST_NAMES),
        };
        Person {
            female,
            first,
            last,
        }
    }

    fn street(&mut self, country: Country, out: &mut String) -> std::fmt::Result {
        let name = self.pick(match country {
            Country::De => STREETS,
            Country::At => AUSTRIAN_STREETS,
            Country::Ch => SWISS_STREETS,
        });
        let number = self.rng.random_range(1..=180);
        write!(out, "{name} {number}")?;
        match self.rng.random_range(0..100) {
            0..8 => out.push(self.pick(&['a', 'b', 'c'])),
            8..11 => write!(out, "-{}", number + 2)?,
            11..25 if country == Country::At => write!(
                out,
                "/{}/{}",
                self.rng.random_range(1..4),
                self.rng.random_range(1..30)
            )?,
            _ => {}
        }
        Ok(())
    }

    fn email(&mut self, person: &Person, out: &mut String) -> std::fmt::Result {
        let domain = self.pick(&["example.net", "example.org", "example.com"]);
        let first = ascii_lower(person.first, &mut self.scratch).to_owned();
        let last = ascii_lower(person.last, &mut self.scratch);
        match self.rng.random_range(0..100) {
            0..60 => write!(out, "{first}.{last}@{domain}"),
            60..80 => write!(
                out,
                "{first}{last}{}@{domain}",
                self.rng.random_range(1..100)
            ),
            _ => write!(out, "{}.{last}@{domain}", &first[..1]),
        }
    }
}

#[derive(Clone, Copy)]
struct Person {
    female: bool,
    first: &'static str,
    last: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Country {
    De,
    At,
    Ch,
}

#[derive(Clone, Copy)]
struct Place {
    postcode: &'static str,
    city: &'static str,
    area_code: &'static str,
}

impl Country {
    fn code(self) -> &'static str {
        match self {
            Country::De => "DE",
            Country::At => "AT",
            Country::Ch => "CH",
        }
    }
    fn dialling_code(self) -> &'static str {
        match self {
            Country::De => "+49",
            Country::At => "+43",
            Country::Ch => "+41",
        }
    }
    fn places(self) -> &'static [Place] {
        match self {
            Country::De => DE_PLACES,
            Country::At => AT_PLACES,
            Country::Ch => CH_PLACES,
        }
    }
}

/// Writes `dd-MM-yyyy`, or `yyyy-MM-dd` when `iso`.
fn write_date(out: &mut String, date: Date, iso: bool) -> std::fmt::Result {
    let (year, month, day) = (date.year(), u8::from(date.month()), date.day());
    if iso {
        write!(out, "{year:04}-{month:02}-{day:02}")
    } else {
        write!(out, "{day:02}-{month:02}-{year:04}")
    }
}

/// Whether a date field was written as `yyyy-MM-dd` (defects keep the row's date style).
fn is_iso(text: &str) -> bool {
    text.as_bytes().get(4) == Some(&b'-')
}

fn write_amount(out: &mut String, amount: Decimal, decimal_comma: bool) -> std::fmt::Result {
    let start = out.len();
    write!(out, "{:.2}", amount)?;
    if decimal_comma && let Some(dot) = out[start..].find('.') {
        out.replace_range(start + dot..start + dot + 1, ",");
    }
    Ok(())
}

/// Lower-case ASCII form of a name for e-mail addresses and user names (ä → ae, ß → ss, ...).
fn ascii_lower<'s>(name: &str, scratch: &'s mut String) -> &'s str {
    scratch.clear();
    for c in name.chars() {
        match c {
            'ä' | 'Ä' => scratch.push_str("ae"),
            'ö' | 'Ö' => scratch.push_str("oe"),
            'ü' | 'Ü' => scratch.push_str("ue"),
            'ß' => scratch.push_str("ss"),
            'é' | 'è' | 'ë' => scratch.push('e'),
            'ı' => scratch.push('i'),
            ' ' | '-' => scratch.push('-'),
            c if c.is_ascii_alphanumeric() => scratch.push(c.to_ascii_lowercase()),
            _ => {}
        }
    }
    scratch
}

const FEMALE_FIRST_NAMES: &[&str] = &[
    "Erika",
    "Anna",
    "Maria",
    "Sophie",
    "Jördis",
    "Lena",
    "Hannah",
    "Julia",
    "Katrin",
    "Sabine",
    "Ursula",
    "Brigitte",
    "Renate",
    "Monika",
    "Jana",
    "Lea",
    "Zoë",
    "Mia",
    "Charlotte",
    "Änne",
    "Bärbel",
    "Karin",
    "Petra",
    "Claudia",
    "Nicole",
];
const MALE_FIRST_NAMES: &[&str] = &[
    "Max",
    "Thomas",
    "Michael",
    "Andreas",
    "Stefan",
    "Jörg",
    "Björn",
    "Jürgen",
    "Uwe",
    "Klaus",
    "Günter",
    "Lukas",
    "Felix",
    "Jonas",
    "Paul",
    "Matthias",
    "Sebastian",
    "Tobias",
    "René",
    "Hans-Peter",
    "Dieter",
    "Wolfgang",
    "Ralf",
    "Özgür",
    "Luca",
];
const LAST_NAMES: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Schäfer",
    "Koch",
    "Bauer",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hartmann",
    "Lange",
    "Schmitz",
    "Krause",
    "Köhler",
    "Jäger",
    "Groß",
    "Weiß",
    "Beispiel",
    "Mustermann",
    "Müller-Lüdenscheidt",
    "von Bödefeld",
    "Yılmaz",
    "Kowalski",
    "Öztürk",
    "Böhm",
];
const SWISS_LAST_NAMES: &[&str] = &[
    "Meier", "Keller", "Huber", "Gerber", "Brunner", "Baumann", "Frei", "Zürcher", "Bühler",
];
const COMPANIES: &[&str] = &[
    "Beispiel Outdoor GmbH",
    "Müller & Söhne KG",
    "Bäckerei Schmitz e.K.",
    "Weber Bürotechnik GmbH & Co. KG",
    "Grünwald Gartenbau AG",
    "Praxis Dr. Köhler",
    "Hoffmann, Lange & Partner mbB",
    "Kita Sonnenschein e.V.",
];
const STREETS: &[&str] = &[
    "Hauptstraße",
    "Hauptstr.",
    "Bahnhofstraße",
    "Schillerstraße",
    "Goethestraße",
    "Lindenallee",
    "Mühlenweg",
    "Gartenstraße",
    "Königstraße",
    "Friedrich-Ebert-Straße",
    "Am Sandtorkai",
    "Kirchgasse",
    "Rosenstraße",
    "Schloßallee",
    "Bürgerstraße",
    "Große Bleichen",
    "Äußere Sulzbacher Straße",
    "Ölmühlenweg",
    "Zülpicher Straße",
    "Üllenbergstraße",
    "Lößnitzstraße",
    "An der Alster",
    "Gewerbepark",
];
const AUSTRIAN_STREETS: &[&str] = &[
    "Mariahilfer Straße",
    "Landstraßer Hauptstraße",
    "Herrengasse",
    "Getreidegasse",
    "Hauptplatz",
    "Lindengasse",
];
const SWISS_STREETS: &[&str] = &[
    "Bahnhofstrasse",
    "Hauptstrasse",
    "Dorfstrasse",
    "Seestrasse",
    "Kirchgasse",
    "Zürichstrasse",
    "Bärenplatz",
];
const DE_PLACES: &[Place] = &[
    place("50667", "Köln", "221"),
    place("50829", "Köln", "221"),
    place("80331", "München", "89"),
    place("81541", "München", "89"),
    place("10115", "Berlin", "30"),
    place("10999", "Berlin", "30"),
    place("20095", "Hamburg", "40"),
    place("60311", "Frankfurt am Main", "69"),
    place("40213", "Düsseldorf", "211"),
    place("70173", "Stuttgart", "711"),
    place("90402", "Nürnberg", "911"),
    place("04109", "Leipzig", "341"),
    place("01067", "Dresden", "351"),
    place("06108", "Halle (Saale)", "345"),
    place("48143", "Münster", "251"),
    place("97070", "Würzburg", "931"),
    place("23552", "Lübeck", "451"),
    place("37073", "Göttingen", "551"),
    place("49074", "Osnabrück", "541"),
    place("66111", "Saarbrücken", "681"),
    place("72070", "Tübingen", "7071"),
    place("90762", "Fürth", "911"),
    place("41061", "Mönchengladbach", "2161"),
    place("35390", "Gießen", "641"),
    place("83646", "Bad Tölz", "8041"),
];
const AT_PLACES: &[Place] = &[
    place("1010", "Wien", "1"),
    place("1070", "Wien", "1"),
    place("8010", "Graz", "316"),
    place("4020", "Linz", "732"),
    place("5020", "Salzburg", "662"),
    place("6020", "Innsbruck", "512"),
    place("9020", "Klagenfurt am Wörthersee", "463"),
];
const CH_PLACES: &[Place] = &[
    place("8001", "Zürich", "44"),
    place("3011", "Bern", "31"),
    place("4051", "Basel", "61"),
    place("6003", "Luzern", "41"),
    place("9000", "St. Gallen", "71"),
    place("8400", "Winterthur", "52"),
];

const fn place(postcode: &'static str, city: &'static str, area_code: &'static str) -> Place {
    Place {
        postcode,
        city,
        area_code,
    }
}

/// Article number and name. Names may hold commas, quotes, colons and umlauts, never `|`.
const PRODUCTS: &[(&str, &str)] = &[
    ("TS-0042-M", "Trail-Shirt, Größe M"),
    ("TS-0042-L", "Trail-Shirt, Größe L"),
    ("WS-1180-42", "Wanderschuh „Alpin“, Gr. 42"),
    ("KB-0300", "Kaffeebecher \"Köln\", 0,3 l"),
    ("RS-2210", "Rucksack 28 l, wasserabweisend"),
    ("TF-0007", "Thermosflasche 0,75 l"),
    ("SK-3344", "Socken, 3er-Pack, Gr. 39–42"),
    ("HT-0815", "Handtuch Frottee 50×100 cm"),
    ("AD-1001", "Reiseadapter 1:1 Schuko"),
    ("GS-0025", "Geschenkgutschein 25 €"),
    ("ML-5521", "Müsli-Riegel Nuss & Honig (12 Stück)"),
    ("LP-7788", "LED-Lampe „Öko“, 9 W"),
    ("BW-2020", "Bettwäsche Satin 135×200"),
    ("SG-0450", "Schneidebrett Eiche; geölt"),
    ("KS-0099", "Kühltasche 15 l"),
    ("ZB-1212", "Zahnbürsten-Set (4 Stück)"),
];
const LAGERORTE: &[&str] = &[
    "Köln-Porz",
    "Lager Nord",
    "Regal B-12, Fach 3",
    "Außenlager Fürth",
    "Halle 2; Gang 7",
    "Streckengeschäft",
];
const NOTES: &[&str] = &[
    "Stammkunde, bitte Gratisprobe beilegen",
    "Kunde wünscht Lieferung \"nach 18 Uhr\"",
    "Achtung: Packstation",
    "Rückruf erbeten; Tel. siehe Rechnungsadresse",
    "Zahlung angekündigt\nper Mail am Montag",
    "Geschenkverpackung",
    "Adresse geprüft ✓",
    "Teillieferung, Rest folgt",
];
