//! [`Table`]: rows of cells rendered as aligned columns, the default output of `vswitchctl`.
//!
//! Columns are as wide as their widest cell (measured in characters, not bytes); numeric columns can be
//! right-aligned; an empty table still prints its header, so scripts that count lines see a stable shape.

use std::fmt;

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// A table with a header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        let align = vec![Align::Left; header.len()];
        Table { header, align, rows: Vec::new() }
    }

    /// Right-aligns column `col` (ignored if there is no such column).
    pub fn right(mut self, col: usize) -> Self {
        if let Some(a) = self.align.get_mut(col) {
            *a = Align::Right;
        }
        self
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(|c| c.to_string()).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Number of rows (header excluded).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |i: usize| {
            std::iter::once(&self.header[i]).chain(self.rows.iter().map(|r| &r[i])).map(|c| c.chars().count()).max()
        };
        let widths: Vec<usize> = (0..self.header.len()).map(|i| width(i).unwrap_or(0)).collect();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut out = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.align[i] {
                    Align::Left => {
                        out.push_str(cell);
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        out.extend(std::iter::repeat_n(' ', pad));
                        out.push_str(cell);
                    }
                }
            }
            writeln!(f, "{}", out.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_by_widest_cell() {
        let mut t = Table::new(["PORT", "RX"]).right(1);
        t.row(["c1", "5"]);
        t.row(["uplink", "12345"]);
        assert_eq!(t.to_string(), "PORT       RX\nc1          5\nuplink  12345\n");
    }

    #[test]
    fn empty_table_prints_its_header_and_short_rows_are_padded() {
        let t = Table::new(["MAC", "PORT", "AGE"]);
        assert_eq!(t.to_string(), "MAC  PORT  AGE\n");
        let mut t = Table::new(["A", "B"]);
        t.row(["x"]);
        t.row(["y", "z", "dropped"]);
        assert_eq!(t.to_string(), "A  B\nx\ny  z\n");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(["N", "X"]);
        t.row(["é", "1"]);
        assert_eq!(t.to_string(), "N  X\né  1\n");
    }
}
