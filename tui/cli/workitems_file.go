package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// maxItemsPerCall is how many items AddWorkItems takes at once; a bigger
// file goes in several calls.
const maxItemsPerCall = 10000

// maxItemData is the most a data object may take, JSON encoded; the
// server refuses more, and saying so here names the row before anything
// is sent.
const maxItemData = 1 << 20

// itemFields are the columns of a CSV file, and the keys of a JSON item,
// that set an item's own fields rather than its data.
var itemFields = map[string]bool{
	"reference": true, "priority": true, "data": true,
	"defer_until": true, "deferUntil": true, "deadline": true,
}

// readItemsFile reads the items of a CSV or JSON file (- for stdin). format
// is csv, json, or "" to tell by the file's extension, or for stdin by
// its first character.
func (a *app) readItemsFile(path, format string) ([]*casarev1.WorkItemInput, error) {
	var data []byte
	var err error
	name := path
	if path == "-" {
		data, err = io.ReadAll(a.env.Stdin)
		name = "stdin"
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usageError("-f: %v", err)
	}
	switch format {
	case "csv", "json":
	case "":
		format = itemsFormat(path, data)
		if format == "" {
			return nil, usageError("-f %s: cannot tell CSV from JSON: give --format csv or --format json", path)
		}
	default:
		return nil, usageError("--format: want csv or json, got %q", format)
	}
	var items []*casarev1.WorkItemInput
	if format == "json" {
		items, err = parseItemsJSON(data)
	} else {
		items, err = parseItemsCSV(data)
	}
	if err != nil {
		return nil, usageError("%s: %v", name, err)
	}
	if len(items) == 0 {
		return nil, usageError("%s: no items in it", name)
	}
	return items, nil
}

// itemsFormat tells a file's format by its extension, or by its first
// character when it has none it knows: JSON opens with [ or {.
func itemsFormat(path string, data []byte) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return "csv"
	case ".json":
		return "json"
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(trimmed) == 0 {
		return ""
	}
	if trimmed[0] == '[' || trimmed[0] == '{' {
		return "json"
	}
	return "csv"
}

// parseItemsJSON reads an array whose elements are items ({"reference":
// …, "priority": …, "data": {…}}) or data objects. An element is an item
// when it holds a "data" object and no key an item does not have. In a
// data object the keys reference, priority, defer_until and deadline set
// those fields, as the columns of a CSV file do, and the rest is the data.
func parseItemsJSON(data []byte) ([]*casarev1.WorkItemInput, error) {
	var rows []json.RawMessage
	if err := json.Unmarshal(data, &rows); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return nil, fmt.Errorf("not valid JSON at byte %d: %v", syntax.Offset, err)
		}
		return nil, fmt.Errorf("want a JSON array of items or of data objects: %v", err)
	}
	items := make([]*casarev1.WorkItemInput, 0, len(rows))
	for i, raw := range rows {
		item, err := jsonItem(raw)
		if err != nil {
			return nil, fmt.Errorf("item %d: %v", i+1, err)
		}
		items = append(items, item)
	}
	return items, nil
}

func jsonItem(raw json.RawMessage) (*casarev1.WorkItemInput, error) {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("want a JSON object, got %s", abbreviate(string(raw), 40))
	}
	item := &casarev1.WorkItemInput{}
	if !isItem(obj) {
		for key := range itemFields {
			v, ok := obj[key]
			if !ok || key == "data" {
				continue
			}
			text, err := fieldText(key, v)
			if err != nil {
				return nil, err
			}
			if err := setItemField(item, key, text); err != nil {
				return nil, err
			}
			delete(obj, key)
		}
		s, err := dataStruct(obj)
		if err != nil {
			return nil, err
		}
		item.Data = s
		return item, nil
	}
	for key, v := range obj {
		switch key {
		case "data":
			d, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("data: want a JSON object")
			}
			s, err := dataStruct(d)
			if err != nil {
				return nil, err
			}
			item.Data = s
			continue
		}
		text, err := fieldText(key, v)
		if err != nil {
			return nil, err
		}
		if err := setItemField(item, key, text); err != nil {
			return nil, err
		}
	}
	return item, nil
}

// fieldText is the text of an item field's JSON value: a string, or for a
// reference also a whole number (an invoice number exported as one).
func fieldText(key string, v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case float64:
		if key == "reference" && v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10), nil
		}
	}
	return "", fmt.Errorf("%s: want a string", key)
}

func isItem(obj map[string]any) bool {
	if _, ok := obj["data"].(map[string]any); !ok {
		return false
	}
	for key := range obj {
		if !itemFields[key] {
			return false
		}
	}
	return true
}

// parseItemsCSV reads a CSV file with a header row: the columns
// reference, priority, defer_until and deadline set those fields, every
// other column goes into the data as a string.
func parseItemsCSV(data []byte) ([]*casarev1.WorkItemInput, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	header, err := r.Read()
	if err == io.EOF {
		return nil, errors.New("empty: want a header row, then one row per item")
	}
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, col := range header {
		col = strings.TrimSpace(col)
		header[i] = col
		switch {
		case col == "":
			return nil, fmt.Errorf("line 1: column %d has no name", i+1)
		case col == "data":
			return nil, errors.New(`line 1: column "data": name the data's fields as columns of their own`)
		case seen[col]:
			return nil, fmt.Errorf("line 1: column %q appears twice", col)
		}
		seen[col] = true
	}
	var items []*casarev1.WorkItemInput
	for {
		row, err := r.Read()
		if err == io.EOF {
			return items, nil
		}
		if err != nil {
			// csv.ParseError names the line and column.
			return nil, err
		}
		line, _ := r.FieldPos(0)
		item, err := csvItem(header, row)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		items = append(items, item)
	}
}

func csvItem(header, row []string) (*casarev1.WorkItemInput, error) {
	fields := map[string]any{}
	item := &casarev1.WorkItemInput{}
	for i, col := range header {
		if itemFields[col] {
			if err := setItemField(item, col, strings.TrimSpace(row[i])); err != nil {
				return nil, err
			}
			continue
		}
		fields[col] = row[i]
	}
	s, err := dataStruct(fields)
	if err != nil {
		return nil, err
	}
	item.Data = s
	return item, nil
}

// newItemInput is an item holding fields as its data.
func newItemInput(fields map[string]any) (*casarev1.WorkItemInput, error) {
	s, err := dataStruct(fields)
	if err != nil {
		return nil, err
	}
	return &casarev1.WorkItemInput{Data: s}, nil
}

func dataStruct(fields map[string]any) (*structpb.Struct, error) {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("data: %v", err)
	}
	if b, _ := json.Marshal(fields); len(b) > maxItemData {
		return nil, fmt.Errorf("data: %d bytes as JSON, over the limit of 1 MiB", len(b))
	}
	return s, nil
}

// setItemField sets one of an item's own fields from its text; empty
// leaves it unset.
func setItemField(item *casarev1.WorkItemInput, key, text string) error {
	if text == "" {
		return nil
	}
	switch key {
	case "reference":
		item.Reference = text
	case "priority":
		p, err := parseItemPriority(text)
		if err != nil {
			return fmt.Errorf("priority: %v", err)
		}
		item.Priority = p
	case "defer_until", "deferUntil":
		t, err := parseTime(text, time.Now())
		if err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		item.DeferUntil = timestamppb.New(t)
	case "deadline":
		t, err := parseTime(text, time.Now())
		if err != nil {
			return fmt.Errorf("deadline: %v", err)
		}
		item.Deadline = timestamppb.New(t)
	}
	return nil
}

// parseItemPriority takes low, normal or high, in any case, or the API's
// name WORK_ITEM_PRIORITY_HIGH.
func parseItemPriority(s string) (casarev1.WorkItemPriority, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "WORK_ITEM_PRIORITY_") {
		name = "WORK_ITEM_PRIORITY_" + name
	}
	v, ok := casarev1.WorkItemPriority_value[name]
	if !ok || v == 0 {
		return 0, fmt.Errorf("want low, normal or high, got %q", s)
	}
	return casarev1.WorkItemPriority(v), nil
}

// parseTime reads a time as RFC 3339 (2027-01-31T17:00:00Z), a date
// (2027-01-31, midnight UTC), or a duration from now (90m, 2h, 3d; -2h
// for two hours ago).
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := parseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("want a time such as 2027-01-31T17:00:00Z, a date 2027-01-31 or a duration from now such as 4h or -3d, got %q", s)
}

// parseDuration is time.ParseDuration that also takes days: 3d, 1d12h.
func parseDuration(s string) (time.Duration, error) {
	sign := time.Duration(1)
	rest := s
	if strings.HasPrefix(rest, "-") {
		sign, rest = -1, rest[1:]
	}
	var days time.Duration
	if i := strings.Index(rest, "d"); i > 0 {
		var n int
		if _, err := fmt.Sscanf(rest[:i], "%d", &n); err != nil || fmt.Sprint(n) != rest[:i] {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, rest[i+1:]
		if rest == "" {
			return sign * days, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return sign * (days + d), nil
}

func abbreviate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
