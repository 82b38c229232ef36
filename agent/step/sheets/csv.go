package sheets

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/files"
)

// bom is the byte order mark Excel puts before the UTF-8 CSV files it
// saves; left in, it would become part of the first column's name.
const bom = "\uFEFF"

type csvReadParams struct {
	Path      string `json:"path" step:"required" doc:"CSV file to read."`
	Delimiter string `json:"delimiter" doc:"The character between cells. Default a comma; \\t or a tab for tab-separated files."`
	Header    *bool  `json:"header" doc:"The first line names the columns and rows are objects keyed by them (default true); false makes every line a row, as a list of cells."`
}

type readOutputs struct {
	Rows    []any    `json:"rows" doc:"The rows: objects keyed by column name with a header, lists of cells without one."`
	Count   int      `json:"count" doc:"How many rows were read, the header not counted."`
	Columns []string `json:"columns" doc:"The column names from the header, made unique (a repeated name gets _2); empty without a header."`
}

var csvReadAction = step.Define("csv.read", "Reads a CSV file into rows.",
	func(ctx context.Context, env *step.Env, p csvReadParams) (readOutputs, error) {
		comma, err := delimiter(p.Delimiter)
		if err != nil {
			return readOutputs{}, err
		}
		path, err := files.ResolveParam(env, "path", p.Path)
		if err != nil {
			return readOutputs{}, err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return readOutputs{}, openProblem(p.Path, err)
		}
		r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte(bom))))
		r.Comma = comma
		r.FieldsPerRecord = -1 // ragged lines are checked below, with a better message

		header := p.Header == nil || *p.Header
		out := readOutputs{Rows: []any{}, Columns: []string{}}
		for {
			if err := ctx.Err(); err != nil {
				return readOutputs{}, err
			}
			record, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return readOutputs{}, step.Businessf("with.path: %s is not valid CSV: %v", p.Path, err)
			}
			if header && len(out.Columns) == 0 {
				var renamed []string
				out.Columns, renamed = uniqueColumns(record, func(i int) string { return "column_" + strconv.Itoa(i+1) })
				if len(renamed) > 0 {
					env.Logf("warn", "csv.read: %s: repeated column names: %s", p.Path, strings.Join(renamed, ", "))
				}
				continue
			}
			if !header {
				row := make([]any, len(record))
				for i, cell := range record {
					row[i] = cell
				}
				out.Rows = append(out.Rows, row)
				continue
			}
			if len(record) > len(out.Columns) {
				line, _ := r.FieldPos(0)
				return readOutputs{}, step.Businessf("with.path: %s line %d has %d cells but the header names %d columns", p.Path, line, len(record), len(out.Columns))
			}
			out.Rows = append(out.Rows, rowObject(out.Columns, record, ""))
		}
		out.Count = len(out.Rows)
		return out, nil
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots, or does not exist"),
	step.Rejects("the file is not valid CSV, or a line has more cells than the header names"),
	step.Rejects("the delimiter is not a single character"),
	step.Fails("the file cannot be read"))

type csvWriteParams struct {
	Path      string   `json:"path" step:"required" doc:"CSV file to write; missing parent directories are created."`
	Rows      []any    `json:"rows" step:"required" doc:"The rows: objects (cells taken by column name) or lists of cells."`
	Columns   []string `json:"columns" doc:"Column order and header. Default for object rows: the first row's keys sorted, then keys later rows add; list rows have no default header."`
	Delimiter string   `json:"delimiter" doc:"The character between cells. Default a comma."`
	Header    *bool    `json:"header" doc:"Write the column names as the first line (default true) when there are any."`
	Append    bool     `json:"append" doc:"Add the rows to the end of an existing file, without a header, instead of replacing it."`
}

type writeOutputs struct {
	Path  string `json:"path" doc:"The absolute path of the file."`
	Count int    `json:"count" doc:"How many rows were written, the header not counted."`
}

var csvWriteAction = step.Define("csv.write", "Writes rows to a CSV file.",
	func(_ context.Context, env *step.Env, p csvWriteParams) (writeOutputs, error) {
		comma, err := delimiter(p.Delimiter)
		if err != nil {
			return writeOutputs{}, err
		}
		t, err := toTable(p.Rows, p.Columns)
		if err != nil {
			return writeOutputs{}, err
		}
		path, err := files.ResolveParam(env, "path", p.Path)
		if err != nil {
			return writeOutputs{}, err
		}
		existing, statErr := os.Stat(path)
		if statErr == nil && existing.IsDir() {
			return writeOutputs{}, step.Businessf("with.path: %s is a directory", p.Path)
		}
		appending := p.Append && statErr == nil && existing.Size() > 0

		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Comma = comma
		if (p.Header == nil || *p.Header) && len(t.columns) > 0 && !appending {
			w.Write(t.columns)
		}
		record := []string{}
		for _, cells := range t.cells {
			record = record[:0]
			for _, cell := range cells {
				record = append(record, cellText(cell))
			}
			w.Write(record)
		}
		w.Flush()
		if err := w.Error(); err != nil {
			return writeOutputs{}, step.Failf("write %s: %w", p.Path, err)
		}

		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return writeOutputs{}, step.Businessf("with.path: cannot create the directory for %s: %v", p.Path, err)
		}
		if appending {
			err = appendTo(path, buf.Bytes())
		} else {
			err = files.WriteFileAtomic(path, buf.Bytes(), 0o644)
		}
		if err != nil {
			return writeOutputs{}, step.Failf("write %s: %w", p.Path, err)
		}
		return writeOutputs{Path: path, Count: len(t.cells)}, nil
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots, or is a directory"),
	step.Rejects("rows mixes objects and lists, or holds something else"),
	step.Rejects("the delimiter is not a single character"),
	step.Fails("the file cannot be written"))

func appendTo(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

// delimiter parses the delimiter parameter: one character, with \t
// accepted for a tab because a tab is hard to write in YAML.
func delimiter(s string) (rune, error) {
	switch s {
	case "":
		return ',', nil
	case `\t`, "tab":
		return '\t', nil
	}
	r, size := utf8.DecodeRuneInString(s)
	if size != len(s) || r == utf8.RuneError || r == '"' || r == '\r' || r == '\n' {
		return 0, step.Businessf("with.delimiter: %q is not a single character that can separate cells", s)
	}
	return r, nil
}

// openProblem describes a file the workflow named that cannot be opened.
func openProblem(p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return step.Businessf("with.path: %s does not exist", p)
	}
	if errors.Is(err, syscall.EISDIR) {
		return step.Businessf("with.path: %s is a directory", p)
	}
	return step.Failf("read %s: %w", p, err)
}
