package sheets

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"

	"github.com/casarerpa/casare/agent/step"
)

type bundle struct {
	env     *step.Env
	actions step.Catalogue
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return &bundle{env: &step.Env{WorkDir: t.TempDir()}, actions: step.NewCatalogue(Actions()...)}
}

func (b *bundle) run(t *testing.T, name string, with map[string]any) (map[string]any, error) {
	t.Helper()
	a, err := b.actions.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Run(context.Background(), b.env, with)
}

func (b *bundle) mustRun(t *testing.T, name string, with map[string]any) map[string]any {
	t.Helper()
	out, err := b.run(t, name, with)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

func wantBusiness(t *testing.T, err error, contains string) {
	t.Helper()
	if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), contains) {
		t.Fatalf("err = %v, want a business error containing %q", err, contains)
	}
}

func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s = %#v\nwant %#v", what, got, want)
	}
}

func TestCSVRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := []any{
		map[string]any{"name": "Ada", "amount": 12.5, "paid": true},
		map[string]any{"name": "Grace, \"Amazing\"", "amount": 7.0, "note": "line\nbreak"},
	}
	out := b.mustRun(t, "csv.write", map[string]any{"path": "out/invoices.csv", "rows": rows})
	wantEqual(t, "write outputs", out, map[string]any{"path": filepath.Join(b.env.WorkDir, "out", "invoices.csv"), "count": 2.0})
	data, _ := os.ReadFile(filepath.Join(b.env.WorkDir, "out", "invoices.csv"))
	wantEqual(t, "file", string(data), "amount,name,paid,note\n12.5,Ada,true,\n7,\"Grace, \"\"Amazing\"\"\",,\"line\nbreak\"\n")

	out = b.mustRun(t, "csv.read", map[string]any{"path": "out/invoices.csv"})
	wantEqual(t, "columns", out["columns"], []any{"amount", "name", "paid", "note"})
	wantEqual(t, "rows", out["rows"], []any{
		map[string]any{"amount": "12.5", "name": "Ada", "paid": "true", "note": ""},
		map[string]any{"amount": "7", "name": "Grace, \"Amazing\"", "paid": "", "note": "line\nbreak"},
	})
	wantEqual(t, "count", out["count"], 2.0)

	b.mustRun(t, "csv.write", map[string]any{"path": "out/invoices.csv", "rows": []any{map[string]any{"name": "Linus", "amount": 1.0}}, "append": true})
	out = b.mustRun(t, "csv.read", map[string]any{"path": "out/invoices.csv"})
	if out["count"] != 3.0 || out["rows"].([]any)[2].(map[string]any)["name"] != "Linus" {
		t.Fatalf("after append: %v", out)
	}
}

func TestCSVOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(b.env.WorkDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("excel.csv", "\uFEFFid;name;name;\n1;a;b;c\n2;d\n")
	write("ragged.csv", "a,b\n1,2,3\n")
	write("broken.csv", "a,b\n\"open,2\n")

	out := b.mustRun(t, "csv.read", map[string]any{"path": "excel.csv", "delimiter": ";"})
	wantEqual(t, "columns", out["columns"], []any{"id", "name", "name_2", "column_4"})
	wantEqual(t, "rows", out["rows"], []any{
		map[string]any{"id": "1", "name": "a", "name_2": "b", "column_4": "c"},
		map[string]any{"id": "2", "name": "d", "name_2": "", "column_4": ""},
	})
	out = b.mustRun(t, "csv.read", map[string]any{"path": "excel.csv", "delimiter": ";", "header": false})
	wantEqual(t, "rows", out["rows"], []any{[]any{"id", "name", "name", ""}, []any{"1", "a", "b", "c"}, []any{"2", "d"}})
	wantEqual(t, "columns", out["columns"], []any{})

	b.mustRun(t, "csv.write", map[string]any{"path": "t.tsv", "delimiter": `\t`, "columns": []any{"x", "y"}, "rows": []any{[]any{1.0, "a b"}, []any{nil, []any{1.0}}}})
	data, _ := os.ReadFile(filepath.Join(b.env.WorkDir, "t.tsv"))
	wantEqual(t, "tsv", string(data), "x\ty\n1\ta b\n\t[1]\n")
	b.mustRun(t, "csv.write", map[string]any{"path": "picked.csv", "columns": []any{"b"}, "header": false, "rows": []any{map[string]any{"a": 1.0, "b": 2.0}}})
	data, _ = os.ReadFile(filepath.Join(b.env.WorkDir, "picked.csv"))
	wantEqual(t, "picked", string(data), "2\n")

	for _, tc := range []struct {
		name   string
		action string
		with   map[string]any
		want   string
	}{
		{"Ragged", "csv.read", map[string]any{"path": "ragged.csv"}, "with.path: ragged.csv line 2 has 3 cells but the header names 2 columns"},
		{"Broken", "csv.read", map[string]any{"path": "broken.csv"}, "with.path: broken.csv is not valid CSV"},
		{"Missing", "csv.read", map[string]any{"path": "nope.csv"}, "with.path: nope.csv does not exist"},
		{"Outside", "csv.read", map[string]any{"path": "/etc/passwd"}, "with.path: /etc/passwd is outside"},
		{"Delimiter", "csv.read", map[string]any{"path": "excel.csv", "delimiter": ";;"}, `with.delimiter: ";;" is not a single character`},
		{"MixedRows", "csv.write", map[string]any{"path": "x.csv", "rows": []any{map[string]any{}, []any{}}}, "with.rows: mixes objects and lists"},
		{"ScalarRow", "csv.write", map[string]any{"path": "x.csv", "rows": []any{"a"}}, "with.rows[0]: want an object or a list, got a string"},
		{"WriteOutside", "csv.write", map[string]any{"path": "../x.csv", "rows": []any{}}, "with.path: ../x.csv is outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.run(t, tc.action, tc.with)
			wantBusiness(t, err, tc.want)
		})
	}
}

func TestExcelRoundTripKeepsTypes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := []any{
		map[string]any{"id": "00123", "amount": 1234.5, "qty": 3.0, "ok": "yes", "account": "12345678901234567890"},
		map[string]any{"id": "A-7", "amount": -0.25, "qty": 0.0, "ok": "", "account": "1"},
	}
	out := b.mustRun(t, "excel.write", map[string]any{"path": "book.xlsx", "sheet": "Invoices", "rows": rows})
	wantEqual(t, "write outputs", out, map[string]any{"path": filepath.Join(b.env.WorkDir, "book.xlsx"), "count": 2.0})

	out = b.mustRun(t, "excel.read", map[string]any{"path": "book.xlsx"})
	wantEqual(t, "sheets", out["sheets"], []any{"Invoices"})
	wantEqual(t, "columns", out["columns"], []any{"account", "amount", "id", "ok", "qty"})
	wantEqual(t, "rows", out["rows"], []any{
		map[string]any{"id": "00123", "amount": 1234.5, "qty": 3.0, "ok": "yes", "account": "12345678901234567890"},
		map[string]any{"id": "A-7", "amount": -0.25, "qty": 0.0, "ok": "", "account": 1.0},
	})

	// What a spreadsheet user sees: the cells have Excel's own types.
	f, err := excelize.OpenFile(filepath.Join(b.env.WorkDir, "book.xlsx"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for cell, want := range map[string]excelize.CellType{"B2": excelize.CellTypeNumber, "C2": excelize.CellTypeInlineString, "A1": excelize.CellTypeInlineString} {
		got, err := f.GetCellType("Invoices", cell)
		if err != nil || got != want && !(want == excelize.CellTypeNumber && got == excelize.CellTypeUnset) {
			t.Errorf("%s type = %v, %v; want %v", cell, got, err, want)
		}
	}
}

func TestExcelWriteIntoAnExistingWorkbook(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := filepath.Join(b.env.WorkDir, "book.xlsx")
	f := excelize.NewFile()
	f.SetCellValue("Sheet1", "A1", "keep me")
	f.NewSheet("Data")
	for r := 1; r <= 10; r++ {
		f.SetCellValue("Data", fmt.Sprintf("A%d", r), r)
	}
	if err := f.SaveAs(path); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b.mustRun(t, "excel.write", map[string]any{"path": "book.xlsx", "sheet": "Data", "rows": []any{[]any{"x", 1.0}, []any{"y", 2.0}}, "start": "B3"})
	b.mustRun(t, "excel.write", map[string]any{"path": "book.xlsx", "sheet": "New", "rows": []any{map[string]any{"a": true}}})

	out := b.mustRun(t, "excel.read", map[string]any{"path": "book.xlsx", "sheet": "Data", "header": false})
	wantEqual(t, "replaced sheet", out["rows"], []any{[]any{"", "x", 1.0}, []any{"", "y", 2.0}})
	wantEqual(t, "sheets", out["sheets"], []any{"Sheet1", "Data", "New"})
	out = b.mustRun(t, "excel.read", map[string]any{"path": "book.xlsx", "header": false})
	wantEqual(t, "other sheet", out["rows"], []any{[]any{"keep me"}})
	out = b.mustRun(t, "excel.read", map[string]any{"path": "book.xlsx", "sheet": "New"})
	wantEqual(t, "new sheet", out["rows"], []any{map[string]any{"a": 1.0}})
	out = b.mustRun(t, "excel.read", map[string]any{"path": "book.xlsx", "sheet": "New", "formatted": true})
	wantEqual(t, "formatted", out["rows"], []any{map[string]any{"a": "TRUE"}})
}

func TestExcelRange(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var rows []any
	for r := 1; r <= 30; r++ {
		row := []any{}
		for c := 1; c <= 8; c++ {
			name, _ := excelize.CoordinatesToCellName(c, r)
			row = append(row, name)
		}
		rows = append(rows, row)
	}
	b.mustRun(t, "excel.write", map[string]any{"path": "grid.xlsx", "rows": rows})
	for _, tc := range []struct {
		name string
		with map[string]any
		want []any
	}{
		{"Block", map[string]any{"range": "B2:C4", "header": false}, []any{[]any{"B2", "C2"}, []any{"B3", "C3"}, []any{"B4", "C4"}}},
		{"Reversed", map[string]any{"range": "$C$4:$B$2", "header": false}, []any{[]any{"B2", "C2"}, []any{"B3", "C3"}, []any{"B4", "C4"}}},
		{"FromCell", map[string]any{"range": "G29", "header": false}, []any{[]any{"G29", "H29"}, []any{"G30", "H30"}}},
		{"WithHeader", map[string]any{"range": "D10:E11"}, []any{map[string]any{"D10": "D11", "E10": "E11"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.with["path"] = "grid.xlsx"
			out := b.mustRun(t, "excel.read", tc.with)
			wantEqual(t, "rows", out["rows"], tc.want)
		})
	}
}

func TestExcelHeaderGaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustRun(t, "excel.write", map[string]any{"path": "gaps.xlsx", "start": "B2", "rows": []any{
		[]any{"name", nil, "name"},
		[]any{},
		[]any{"a", 1.0, "b", "stray"},
	}})
	out := b.mustRun(t, "excel.read", map[string]any{"path": "gaps.xlsx"})
	// Column A is empty but inside the sheet; range B2 would leave it out.
	wantEqual(t, "columns", out["columns"], []any{"A", "name", "C", "name_2", "E"})
	wantEqual(t, "rows", out["rows"], []any{map[string]any{"A": "", "name": "a", "C": 1.0, "name_2": "b", "E": "stray"}})
	out = b.mustRun(t, "excel.read", map[string]any{"path": "gaps.xlsx", "range": "B2"})
	wantEqual(t, "columns from B", out["columns"], []any{"name", "C", "name_2", "E"})
}

func TestExcelErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustRun(t, "excel.write", map[string]any{"path": "book.xlsx", "sheet": "Sales", "rows": []any{[]any{1.0}}})
	b.mustRun(t, "excel.write", map[string]any{"path": "book.xlsx", "sheet": "Costs", "rows": []any{[]any{1.0}}})
	if err := os.WriteFile(filepath.Join(b.env.WorkDir, "fake.xlsx"), []byte("id,name\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		action string
		with   map[string]any
		want   string
	}{
		{"MissingSheet", "excel.read", map[string]any{"path": "book.xlsx", "sheet": "Summary"}, "with.sheet: Summary does not exist; the workbook has Sales, Costs"},
		{"MissingFile", "excel.read", map[string]any{"path": "nope.xlsx"}, "with.path: nope.xlsx does not exist"},
		{"NotAWorkbook", "excel.read", map[string]any{"path": "fake.xlsx"}, "with.path: fake.xlsx is not an .xlsx workbook"},
		{"BadRange", "excel.read", map[string]any{"path": "book.xlsx", "range": "1A:ZZ"}, `with.range: "1A:ZZ" is not like A1:D20`},
		{"Outside", "excel.read", map[string]any{"path": "/etc/passwd"}, "with.path: /etc/passwd is outside"},
		{"BadSheetName", "excel.write", map[string]any{"path": "book.xlsx", "sheet": "a/b", "rows": []any{}}, "with.sheet:"},
		{"BadStart", "excel.write", map[string]any{"path": "new.xlsx", "start": "A0", "rows": []any{}}, `with.start: "A0" is not a cell like A1`},
		{"TooManyRows", "excel.write", map[string]any{"path": "new.xlsx", "start": "A1048576", "rows": []any{[]any{1.0}, []any{2.0}}}, "with.rows: row 1048577"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.run(t, tc.action, tc.with)
			wantBusiness(t, err, tc.want)
		})
	}
	if _, err := os.Stat(filepath.Join(b.env.WorkDir, "new.xlsx")); !os.IsNotExist(err) {
		t.Fatalf("a failed write left a file: %v", err)
	}
}

func TestExcelLargeSheet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20000
	rows := make([]any, n)
	for i := range rows {
		rows[i] = map[string]any{"id": float64(i + 1), "name": fmt.Sprintf("customer %d", i+1), "balance": float64(i) * 1.5}
	}
	start := time.Now()
	b.mustRun(t, "excel.write", map[string]any{"path": "big.xlsx", "rows": rows})
	out := b.mustRun(t, "excel.read", map[string]any{"path": "big.xlsx"})
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Fatalf("writing and reading %d rows took %s", n, elapsed)
	}
	got := out["rows"].([]any)
	if out["count"] != float64(n) || len(got) != n {
		t.Fatalf("count = %v, rows %d", out["count"], len(got))
	}
	wantEqual(t, "last row", got[n-1], map[string]any{"id": float64(n), "name": fmt.Sprintf("customer %d", n), "balance": float64(n-1) * 1.5})
	// Sheet row r holds the data row r-1, below the header.
	out = b.mustRun(t, "excel.read", map[string]any{"path": "big.xlsx", "range": "A20000:C20001", "header": false})
	wantEqual(t, "range at the end", out["rows"], []any{
		[]any{float64(n-2) * 1.5, float64(n - 1), fmt.Sprintf("customer %d", n-1)},
		[]any{float64(n-1) * 1.5, float64(n), fmt.Sprintf("customer %d", n)},
	})
}

func TestTyped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw  string
		want any
	}{
		{"42", 42.0}, {"-0.5", -0.5}, {"1E-3", 0.001}, {"0.30000000000000004", 0.30000000000000004},
		{"", ""}, {"00123", "00123"}, {"+1", "+1"}, {"1,000", "1,000"}, {"1.", "1."}, {" 1", " 1"},
		{"12345678901234567890", "12345678901234567890"}, {"NaN", "NaN"}, {"Inf", "Inf"},
	} {
		if got := typed(tc.raw); got != tc.want {
			t.Errorf("typed(%q) = %#v, want %#v", tc.raw, got, tc.want)
		}
	}
}
