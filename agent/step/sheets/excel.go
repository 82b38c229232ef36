package sheets

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/files"
)

type excelReadParams struct {
	Path      string `json:"path" step:"required" doc:"Workbook (.xlsx) to read."`
	Sheet     string `json:"sheet" doc:"Sheet to read. Default the first."`
	Range     string `json:"range" doc:"Cells to read, as A1:D20, or A2 for everything from there on. Default the whole sheet."`
	Header    *bool  `json:"header" doc:"The first non-blank row of the range names the columns and rows are objects keyed by them (default true); false makes every row a list of cells."`
	Formatted bool   `json:"formatted" doc:"Return every cell as the text Excel displays (dates as dates, 1,234.50); without it numbers are numbers and dates their serial numbers."`
}

type excelReadOutputs struct {
	Rows    []any    `json:"rows" doc:"The rows, blank rows left out: objects keyed by column name with a header, lists of cells without one. Empty cells are empty text."`
	Count   int      `json:"count" doc:"How many rows were read, the header not counted."`
	Columns []string `json:"columns" doc:"The column names from the header, made unique; an empty header cell, or a cell right of the header, is named by its column letter."`
	Sheets  []string `json:"sheets" doc:"The names of all sheets in the workbook, in order."`
}

var excelReadAction = step.Define("excel.read", "Reads a sheet of an Excel workbook into rows.",
	excelRead,
	step.Rejects("the path is outside the job's work directory and the allowed roots, does not exist or is not an .xlsx workbook"),
	step.Rejects("the sheet does not exist"),
	step.Rejects("the range is not like A1:D20"),
	step.Fails("the workbook cannot be read"))

func excelRead(ctx context.Context, env *step.Env, p excelReadParams) (excelReadOutputs, error) {
	area, err := parseRange(p.Range)
	if err != nil {
		return excelReadOutputs{}, err
	}
	path, err := files.ResolveParam(env, "path", p.Path)
	if err != nil {
		return excelReadOutputs{}, err
	}
	f, err := openWorkbook(p.Path, path)
	if err != nil {
		return excelReadOutputs{}, err
	}
	defer f.Close()
	out := excelReadOutputs{Rows: []any{}, Columns: []string{}, Sheets: f.GetSheetList()}
	sheet, err := pickSheet(p.Sheet, out.Sheets)
	if err != nil {
		return excelReadOutputs{}, err
	}

	rows, err := f.Rows(sheet)
	if err != nil {
		return excelReadOutputs{}, step.Failf("read sheet %s of %s: %w", sheet, p.Path, err)
	}
	defer rows.Close()
	header := p.Header == nil || *p.Header
	haveHeader := false
	opts := excelize.Options{RawCellValue: !p.Formatted}
	for n := 1; rows.Next(); n++ {
		if n < area.top {
			continue
		}
		if n > area.bottom {
			break
		}
		if n%1000 == 0 && ctx.Err() != nil {
			return excelReadOutputs{}, ctx.Err()
		}
		cells, err := rows.Columns(opts)
		if err != nil {
			return excelReadOutputs{}, step.Failf("read row %d of sheet %s in %s: %w", n, sheet, p.Path, err)
		}
		cells = area.cut(cells)
		if blank(cells) {
			continue
		}
		if header && !haveHeader {
			haveHeader = true
			var renamed []string
			out.Columns, renamed = uniqueColumns(cells, func(i int) string { return columnName(area.left + i) })
			if len(renamed) > 0 {
				env.Logf("warn", "excel.read: %s sheet %s: repeated column names: %s", p.Path, sheet, strings.Join(renamed, ", "))
			}
			continue
		}
		values := make([]any, len(cells))
		for i, cell := range cells {
			values[i] = cell
			if !p.Formatted {
				values[i] = typed(cell)
			}
		}
		if !header {
			out.Rows = append(out.Rows, values)
			continue
		}
		for len(out.Columns) < len(values) {
			out.Columns, _ = uniqueColumns(append(out.Columns, columnName(area.left+len(out.Columns))), nil)
		}
		out.Rows = append(out.Rows, rowObject(out.Columns, values, any("")))
	}
	if err := rows.Error(); err != nil {
		return excelReadOutputs{}, step.Failf("read sheet %s of %s: %w", sheet, p.Path, err)
	}
	out.Count = len(out.Rows)
	return out, nil
}

// openWorkbook opens the workbook at path (named p in the workflow). Large
// worksheets stay on disk: excelize unpacks those above its XML size
// limit to temporary files, which Close removes.
func openWorkbook(p, path string) (*excelize.File, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, openProblem(p, err)
	}
	if info.IsDir() {
		return nil, step.Businessf("with.path: %s is a directory", p)
	}
	f, err := excelize.OpenFile(path)
	if err != nil {
		if errors.Is(err, excelize.ErrWorkbookFileFormat) || errors.Is(err, excelize.ErrWorkbookPassword) || strings.Contains(err.Error(), "zip:") {
			return nil, step.Businessf("with.path: %s is not an .xlsx workbook excel.read can open: %v", p, err)
		}
		return nil, step.Failf("open %s: %w", p, err)
	}
	return f, nil
}

// pickSheet returns the sheet to use: the named one, or the first.
func pickSheet(name string, sheets []string) (string, error) {
	if len(sheets) == 0 {
		return "", step.Businessf("with.path: the workbook has no sheets")
	}
	if name == "" {
		return sheets[0], nil
	}
	for _, s := range sheets {
		if s == name {
			return s, nil
		}
	}
	return "", step.Businessf("with.sheet: %s does not exist; the workbook has %s", name, strings.Join(sheets, ", "))
}

// area is the part of a sheet to read, in 1-based row and column numbers.
type area struct {
	top, left, bottom, right int
}

func parseRange(s string) (area, error) {
	a := area{top: 1, left: 1, bottom: math.MaxInt, right: math.MaxInt}
	if s == "" {
		return a, nil
	}
	from, to, isRange := strings.Cut(strings.ToUpper(strings.ReplaceAll(s, "$", "")), ":")
	var err error
	if a.left, a.top, err = excelize.CellNameToCoordinates(from); err != nil {
		return area{}, step.Businessf("with.range: %q is not like A1:D20", s)
	}
	if isRange {
		if a.right, a.bottom, err = excelize.CellNameToCoordinates(to); err != nil {
			return area{}, step.Businessf("with.range: %q is not like A1:D20", s)
		}
		a.left, a.right = min(a.left, a.right), max(a.left, a.right)
		a.top, a.bottom = min(a.top, a.bottom), max(a.top, a.bottom)
	}
	return a, nil
}

// cut keeps the cells of a row that lie within the area's columns.
func (a area) cut(cells []string) []string {
	if a.left > len(cells) {
		return nil
	}
	cells = cells[a.left-1:]
	if width := a.right - a.left + 1; a.right != math.MaxInt && len(cells) > width {
		cells = cells[:width]
	}
	return cells
}

func blank(cells []string) bool {
	for _, c := range cells {
		if c != "" {
			return false
		}
	}
	return true
}

func columnName(col int) string {
	name, err := excelize.ColumnNumberToName(col)
	if err != nil {
		return "column_" + strconv.Itoa(col)
	}
	return name
}

// number matches how a workbook stores a number cell: no leading zeros,
// no plus sign, no thousands separators.
var number = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// typed turns a raw cell value into a number when it is one. The streaming
// reader gives raw values without their cell type, so text that reads
// exactly like a stored number ("42") becomes one too; text like "00123",
// "+1" or "1,000" stays text, and so do digits beyond the 17 significant
// ones a number cell can hold (a 20-digit account number kept as text).
func typed(raw string) any {
	if raw == "" || !number.MatchString(raw) {
		return raw
	}
	mantissa, _, _ := strings.Cut(strings.ToLower(raw), "e")
	digits := strings.TrimLeft(strings.NewReplacer("-", "", ".", "").Replace(mantissa), "0")
	if len(digits) > 17 {
		return raw
	}
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsInf(v, 0) {
		return raw
	}
	return v
}

type excelWriteParams struct {
	Path    string   `json:"path" step:"required" doc:"Workbook (.xlsx) to write. An existing one keeps its other sheets; missing parent directories are created."`
	Sheet   string   `json:"sheet" doc:"Sheet to write, created if missing and replaced if present. Default Sheet1."`
	Rows    []any    `json:"rows" step:"required" doc:"The rows: objects (cells taken by column name) or lists of cells. Numbers, text and booleans keep their type."`
	Columns []string `json:"columns" doc:"Column order and header. Default for object rows: the first row's keys sorted, then keys later rows add."`
	Start   string   `json:"start" doc:"Top left cell of what is written. Default A1."`
	Header  *bool    `json:"header" doc:"Write the column names as the first row (default true) when there are any."`
}

var excelWriteAction = step.Define("excel.write", "Writes rows to a sheet of an Excel workbook, replacing the sheet.",
	excelWrite,
	step.Rejects("the path is outside the job's work directory and the allowed roots, or is not an .xlsx workbook"),
	step.Rejects("the sheet name or start cell is invalid, or the rows do not fit in a sheet"),
	step.Rejects("rows mixes objects and lists, or holds something else"),
	step.Fails("the workbook cannot be written"))

func excelWrite(_ context.Context, env *step.Env, p excelWriteParams) (writeOutputs, error) {
	t, err := toTable(p.Rows, p.Columns)
	if err != nil {
		return writeOutputs{}, err
	}
	start := p.Start
	if start == "" {
		start = "A1"
	}
	col, row, err := excelize.CellNameToCoordinates(strings.ToUpper(start))
	if err != nil {
		return writeOutputs{}, step.Businessf("with.start: %q is not a cell like A1", p.Start)
	}
	sheet := p.Sheet
	if sheet == "" {
		sheet = "Sheet1"
	}
	path, err := files.ResolveParam(env, "path", p.Path)
	if err != nil {
		return writeOutputs{}, err
	}

	var f *excelize.File
	if _, err := os.Stat(path); err == nil {
		if f, err = openWorkbook(p.Path, path); err != nil {
			return writeOutputs{}, err
		}
	} else {
		f = excelize.NewFile()
		if sheet != "Sheet1" {
			if err := f.SetSheetName("Sheet1", sheet); err != nil {
				f.Close()
				return writeOutputs{}, step.Businessf("with.sheet: %v", err)
			}
		}
	}
	defer f.Close()
	if idx, err := f.GetSheetIndex(sheet); err != nil {
		return writeOutputs{}, step.Businessf("with.sheet: %v", err)
	} else if idx == -1 {
		if _, err := f.NewSheet(sheet); err != nil {
			return writeOutputs{}, step.Businessf("with.sheet: %v", err)
		}
	}

	// A stream writer writes the sheet's cells afresh, dropping what was
	// there, and holds little in memory however many rows there are.
	sw, err := f.NewStreamWriter(sheet)
	if err != nil {
		return writeOutputs{}, step.Failf("write sheet %s of %s: %w", sheet, p.Path, err)
	}
	put := func(values []any) error {
		cell, err := excelize.CoordinatesToCellName(col, row)
		if err == nil {
			err = sw.SetRow(cell, values)
		}
		if err != nil {
			return step.Businessf("with.rows: row %d of sheet %s: %v", row, sheet, err)
		}
		row++
		return nil
	}
	if (p.Header == nil || *p.Header) && len(t.columns) > 0 {
		header := make([]any, len(t.columns))
		for i, c := range t.columns {
			header[i] = c
		}
		if err := put(header); err != nil {
			return writeOutputs{}, err
		}
	}
	for _, cells := range t.cells {
		values := make([]any, len(cells))
		for i, c := range cells {
			values[i] = cellValue(c)
		}
		if err := put(values); err != nil {
			return writeOutputs{}, err
		}
	}
	if err := sw.Flush(); err != nil {
		return writeOutputs{}, step.Failf("write sheet %s of %s: %w", sheet, p.Path, err)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return writeOutputs{}, step.Businessf("with.path: cannot create the directory for %s: %v", p.Path, err)
	}
	err = files.WriteAtomic(path, 0o644, func(w io.Writer) error {
		_, err := f.WriteTo(w)
		return err
	})
	if err != nil {
		return writeOutputs{}, step.Failf("write %s: %w", p.Path, err)
	}
	return writeOutputs{Path: path, Count: len(t.cells)}, nil
}

// cellValue is what a cell holds for a workflow value: whole numbers as
// integers (so 42 is not written 42.0 anywhere), other numbers, text and
// booleans as themselves, lists and objects as JSON text.
func cellValue(v any) any {
	switch v := v.(type) {
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v)
		}
		return v
	case nil, string, bool:
		return v
	}
	data, err := json.Marshal(v)
	if err != nil {
		return cellText(v)
	}
	return string(data)
}
