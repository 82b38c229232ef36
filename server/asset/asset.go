// Package asset holds what assets mean beyond their rows: the types and
// the values each takes, the label selectors of overrides and which value
// a robot gets, and the resolution of a job's assets when it is assigned.
package asset

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// MaxValueBytes bounds a value, a secret or a password.
const MaxValueBytes = 64 << 10

// Masked stands for a secret value or a password in every answer.
const Masked = "***"

var types = map[casarev1.AssetType]registry.AssetType{
	casarev1.AssetType_ASSET_TYPE_TEXT:       registry.AssetText,
	casarev1.AssetType_ASSET_TYPE_NUMBER:     registry.AssetNumber,
	casarev1.AssetType_ASSET_TYPE_BOOL:       registry.AssetBool,
	casarev1.AssetType_ASSET_TYPE_JSON:       registry.AssetJSON,
	casarev1.AssetType_ASSET_TYPE_SECRET:     registry.AssetSecret,
	casarev1.AssetType_ASSET_TYPE_CREDENTIAL: registry.AssetCredential,
}

// TypeFromProto returns the stored type of t; false for an unknown one.
func TypeFromProto(t casarev1.AssetType) (registry.AssetType, bool) {
	s, ok := types[t]
	return s, ok
}

// TypeToProto returns the API type of t.
func TypeToProto(t registry.AssetType) casarev1.AssetType {
	for p, s := range types {
		if s == t {
			return p
		}
	}
	return casarev1.AssetType_ASSET_TYPE_UNSPECIFIED
}

// CheckValue checks that value fits t and returns the problem, worded to
// follow the field's name. Numbers are decimal, bools true or false,
// JSON any JSON value.
func CheckValue(t registry.AssetType, value string) error {
	if len(value) > MaxValueBytes {
		return fmt.Errorf("%d bytes, the limit is %d (64 KiB)", len(value), MaxValueBytes)
	}
	switch t {
	case registry.AssetNumber:
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || f != f || f > 1e308 || f < -1e308 {
			return fmt.Errorf("%q is not a number", shorten(value))
		}
	case registry.AssetBool:
		if value != "true" && value != "false" {
			return fmt.Errorf("%q is not a bool (true or false)", shorten(value))
		}
	case registry.AssetJSON:
		if !json.Valid([]byte(value)) {
			return fmt.Errorf("not valid JSON")
		}
	}
	return nil
}

// Value is the value a workflow sees for a stored value of t: a number, a
// bool, a JSON value, or text.
func Value(t registry.AssetType, value string) (any, error) {
	switch t {
	case registry.AssetNumber:
		return strconv.ParseFloat(strings.TrimSpace(value), 64)
	case registry.AssetBool:
		return value == "true", nil
	case registry.AssetJSON:
		var v any
		if err := json.Unmarshal([]byte(value), &v); err != nil {
			return nil, err
		}
		return v, nil
	}
	return value, nil
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Label keys and values of a selector follow the rules of robots' labels.
var (
	labelKey   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]*$`)
	labelValue = regexp.MustCompile(`^[A-Za-z0-9_./:@-]*$`)
)

// MaxSelectorLabels bounds the labels of a selector.
const MaxSelectorLabels = 16

// ParseSelector reads "k=v,k2=v2" and returns it canonical (sorted by key,
// no spaces) with its labels. The empty selector is the asset's own value.
func ParseSelector(s string) (string, map[string]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil, nil
	}
	labels := map[string]string{}
	for pair := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return "", nil, fmt.Errorf("%q is not key=value", shorten(pair))
		case len(k) > 63 || !labelKey.MatchString(k):
			return "", nil, fmt.Errorf("label key %q must be 1 to 63 letters, digits and _./- starting with a letter or digit", shorten(k))
		case len(v) > 256 || !labelValue.MatchString(v):
			return "", nil, fmt.Errorf("label value %q of %s must be at most 256 letters, digits and _./:@-", shorten(v), k)
		}
		if _, dup := labels[k]; dup {
			return "", nil, fmt.Errorf("label %s is given twice", k)
		}
		labels[k] = v
	}
	if len(labels) > MaxSelectorLabels {
		return "", nil, fmt.Errorf("%d labels, the limit is %d", len(labels), MaxSelectorLabels)
	}
	return Canonical(labels), labels, nil
}

// Canonical writes labels as a selector: sorted by key.
func Canonical(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// Pick returns the row of one asset's rows that a robot with the labels
// gets: the override whose selector matches the most labels, all of them
// held by the robot; between overrides that match as many, the one whose
// selector sorts first (so the answer never depends on the order rows were
// written); with no override matching, the row without a selector; nil
// when none applies.
func Pick(rows []registry.Asset, robot map[string]string) *registry.Asset {
	var best, fallback *registry.Asset
	bestN := 0
	for i := range rows {
		row := &rows[i]
		if row.Selector == "" {
			fallback = row
			continue
		}
		_, labels, err := ParseSelector(row.Selector)
		if err != nil || !matches(labels, robot) {
			continue
		}
		if n := len(labels); n > bestN || (n == bestN && best != nil && row.Selector < best.Selector) {
			best, bestN = row, n
		}
	}
	if best != nil {
		return best
	}
	return fallback
}

func matches(labels, robot map[string]string) bool {
	for k, v := range labels {
		if got, ok := robot[k]; !ok || got != v {
			return false
		}
	}
	return true
}
