//! A row's values as text.
//!
//! `csv::StringRecord` checks UTF-8 field by field as soon as a row holds one non-ASCII byte
//! (an umlaut in a name is enough), and those ~35 short checks per row cost more than
//! reading the row. [`TextRecord`] checks the row's bytes once and then only that every field
//! starts on a character boundary, which is the same guarantee: a field is valid UTF-8 exactly
//! when the whole row is and the field neither starts nor ends inside a character.

use csv::ByteRecord;

/// A row's fields, held back to back in one string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextRecord {
    text: String,
    /// Where each field ends in `text`; field `i` starts where field `i - 1` ends.
    ends: Vec<usize>,
}

impl TextRecord {
    /// An empty record with room for `bytes` of text in `fields` fields.
    pub fn with_capacity(bytes: usize, fields: usize) -> Self {
        TextRecord {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// The fields of a CSV record, or `None` when one of them is not UTF-8.
    pub fn from_utf8(record: &ByteRecord) -> Option<Self> {
        let mut text = TextRecord::default();
        text.set_utf8(record).then_some(text)
    }

    /// Makes this record hold the fields of a CSV record, in the memory it already has (a
    /// reader reuses one record for every row); `false`, and an empty record, when one of them
    /// is not UTF-8.
    pub fn set_utf8(&mut self, record: &ByteRecord) -> bool {
        self.set_utf8_fields(
            record.as_slice(),
            record.iter().scan(0, |end, field| {
                *end += field.len();
                Some(*end)
            }),
        )
    }

    /// As [`TextRecord::set_utf8`], for fields given back to back in `bytes`, each ending
    /// where `ends` says.
    pub(crate) fn set_utf8_fields(
        &mut self,
        bytes: &[u8],
        ends: impl IntoIterator<Item = usize>,
    ) -> bool {
        self.text.clear();
        self.ends.clear();
        // simdutf8 checks the usual row (ASCII with a few umlauts) several times faster than
        // `std::str::from_utf8`; it accepts exactly the same inputs.
        let Ok(text) = simdutf8::basic::from_utf8(bytes) else {
            return false;
        };
        for end in ends {
            if !text.is_char_boundary(end) {
                self.ends.clear();
                return false;
            }
            self.ends.push(end);
        }
        self.text.push_str(text);
        true
    }

    /// Memory a reused record may keep: a rare huge row should not pin its buffer.
    pub(crate) fn worth_reusing(&self) -> bool {
        self.text.capacity() <= 1 << 16 && self.ends.capacity() <= 1 << 12
    }

    /// The fields of a CSV record read as Latin-1 (every byte one character), which decodes
    /// any bytes.
    pub fn from_latin1(record: &ByteRecord) -> Self {
        let mut decoded = TextRecord::with_capacity(record.as_slice().len() * 2, record.len());
        for field in record {
            decoded.text.extend(field.iter().map(|&b| char::from(b)));
            decoded.ends.push(decoded.text.len());
        }
        decoded
    }

    /// Removes every field, keeping the memory for the next record.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Appends a field.
    pub fn push_field(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

    /// Appends `count` empty fields.
    pub fn push_empty_fields(&mut self, count: usize) {
        let end = self.text.len();
        self.ends.resize(self.ends.len() + count, end);
    }

    /// Field `index`, if the record has it.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1],
        };
        self.text.get(start..end)
    }

    /// Field `index` as bytes (no check of character boundaries: they were checked once).
    pub fn field_bytes(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(previous) => *self.ends.get(previous)?,
            None => 0,
        };
        self.text.as_bytes().get(start..end)
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where each field ends in [`TextRecord::as_str`].
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }

    /// All fields back to back (for sizing buffers).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl<'a> FromIterator<&'a str> for TextRecord {
    fn from_iter<I: IntoIterator<Item = &'a str>>(fields: I) -> Self {
        let mut record = TextRecord::default();
        for field in fields {
            record.push_field(field);
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_with_empty_and_non_ascii_ones() {
        let bytes = ByteRecord::from(vec!["1001", "", "Köln", "Größe €", ""]);
        let record = TextRecord::from_utf8(&bytes).unwrap();
        assert_eq!(record.len(), 5);
        let fields: Vec<&str> = record.iter().collect();
        assert_eq!(fields, ["1001", "", "Köln", "Größe €", ""]);
        assert_eq!(record.get(5), None);
        assert_eq!(record, fields.into_iter().collect());
    }

    #[test]
    fn empty_fields_are_appended_in_a_row() {
        let mut record = TextRecord::default();
        record.push_empty_fields(2);
        record.push_field("A-1");
        record.push_empty_fields(0);
        record.push_empty_fields(1);
        record.push_field("PAID");
        let fields: Vec<&str> = record.iter().collect();
        assert_eq!(fields, ["", "", "A-1", "", "PAID"]);
    }

    #[test]
    fn a_character_split_between_two_fields_is_not_utf8() {
        // "ä" is C3 A4: the row's bytes are valid UTF-8, but neither field is.
        let bytes = ByteRecord::from(vec![&b"a\xC3"[..], &b"\xA4b"[..]]);
        assert!(std::str::from_utf8(bytes.as_slice()).is_ok());
        assert_eq!(TextRecord::from_utf8(&bytes), None);
    }

    #[test]
    fn invalid_bytes_are_refused_and_read_as_latin1() {
        let bytes = ByteRecord::from(vec![&b"K\xF6ln"[..], &b"x"[..]]);
        assert_eq!(TextRecord::from_utf8(&bytes), None);
        let decoded = TextRecord::from_latin1(&bytes);
        assert_eq!(decoded.iter().collect::<Vec<_>>(), ["Köln", "x"]);
    }
}
