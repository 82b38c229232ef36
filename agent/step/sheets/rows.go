// Package sheets holds the csv.* and excel.* steps, which read tables into
// rows a workflow can loop over and write rows back out. A row is an
// object keyed by column name when the table has a header row, or a list
// of cells when it has none. Paths are confined like the file.* steps'.
package sheets

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/casarerpa/casare/agent/step"
)

// Actions returns the csv.* and excel.* steps.
func Actions() []*step.Action {
	return []*step.Action{csvReadAction, csvWriteAction, excelReadAction, excelWriteAction}
}

// table is rows to write, each a list of cells in column order.
type table struct {
	columns []string
	cells   [][]any
}

// toTable turns the rows parameter into cells. Object rows are laid out by
// columns, or by their keys when columns is empty: the first row's keys in
// sorted order, then any key a later row adds, so that no value is
// silently dropped. List rows are taken as they are.
func toTable(rows []any, columns []string) (table, error) {
	t := table{columns: columns}
	objects, lists := 0, 0
	for i, row := range rows {
		switch row.(type) {
		case map[string]any:
			objects++
		case []any:
			lists++
		default:
			return table{}, step.Businessf("with.rows[%d]: want an object or a list, got %s", i, describe(row))
		}
	}
	if objects > 0 && lists > 0 {
		return table{}, step.Businessf("with.rows: mixes objects and lists; give one kind")
	}
	if objects > 0 && len(columns) == 0 {
		seen := map[string]bool{}
		for _, row := range rows {
			for _, key := range slices.Sorted(maps.Keys(row.(map[string]any))) {
				if !seen[key] {
					seen[key] = true
					t.columns = append(t.columns, key)
				}
			}
		}
	}
	for _, row := range rows {
		switch row := row.(type) {
		case map[string]any:
			cells := make([]any, len(t.columns))
			for i, col := range t.columns {
				cells[i] = row[col]
			}
			t.cells = append(t.cells, cells)
		case []any:
			t.cells = append(t.cells, row)
		}
	}
	return t, nil
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// cellText is how a value is written where only text goes (CSV): numbers
// without exponent or trailing zeros, nested values as JSON.
func cellText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(data)
}

// uniqueColumns makes header names usable as object keys: an empty name
// becomes fallback(i), a repeated one gets _2, _3 and so on. It returns the
// names it had to change so the step can log them.
func uniqueColumns(header []string, fallback func(i int) string) (columns []string, renamed []string) {
	seen := map[string]bool{}
	for i, name := range header {
		original := name
		if name == "" {
			name = fallback(i)
		}
		base := name
		for n := 2; seen[name]; n++ {
			name = base + "_" + strconv.Itoa(n)
		}
		if original != "" && name != original {
			renamed = append(renamed, fmt.Sprintf("%q became %q", original, name))
		}
		seen[name] = true
		columns = append(columns, name)
	}
	return columns, renamed
}

// rowObject keys cells by columns; a missing trailing cell is empty text.
func rowObject[T any](columns []string, cells []T, empty T) map[string]any {
	obj := make(map[string]any, len(columns))
	for i, col := range columns {
		if i < len(cells) {
			obj[col] = cells[i]
		} else {
			obj[col] = empty
		}
	}
	return obj
}
