// Package secret hides the values of secret inputs, and the values derived
// from them, in text a job shows: its logs, messages, errors and outputs.
// The robot masks what it sends and the control plane masks what it
// answers with the same rules, so both hide the same texts.
package secret

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Mask is what a hidden value shows instead.
const Mask = "***"

// MinDerived is the shortest text hidden when it is not a secret itself
// but derived from one (a transform, or a value computed from a secret):
// hiding every "7" or "ok" in a log would hide more than it protects.
const MinDerived = 4

// Masker holds the texts to hide. It is safe for concurrent use: a run
// adds the values it derives while parallel steps log.
type Masker struct {
	mu    sync.RWMutex
	texts []string // longest first, so a text that contains another is hidden whole
}

// New returns a masker that hides each of secrets, whatever its length,
// and the transforms of each that Transforms lists.
func New(secrets ...string) *Masker {
	m := &Masker{}
	for _, s := range secrets {
		m.AddSecret(s)
	}
	return m
}

// AddSecret hides s, whatever its length, and its transforms.
func (m *Masker) AddSecret(s string) {
	if s == "" {
		return
	}
	m.add(append([]string{s}, Transforms(s)...))
}

// AddDerived hides s, a value computed from a secret, and its transforms,
// when s is at least MinDerived bytes long.
func (m *Masker) AddDerived(s string) {
	if len(s) < MinDerived {
		return
	}
	m.add(append([]string{s}, Transforms(s)...))
}

func (m *Masker) add(texts []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for _, t := range texts {
		if t != "" && !slices.Contains(m.texts, t) {
			m.texts = append(m.texts, t)
			changed = true
		}
	}
	if changed {
		slices.SortStableFunc(m.texts, func(a, b string) int { return len(b) - len(a) })
	}
}

// Empty reports whether the masker hides nothing.
func (m *Masker) Empty() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.texts) == 0
}

// String returns s with every text the masker holds replaced by Mask.
func (m *Masker) String(s string) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, t := range m.texts {
		if strings.Contains(s, t) {
			s = strings.ReplaceAll(s, t, Mask)
		}
	}
	return s
}

// Contains reports whether s holds any text the masker hides.
func (m *Masker) Contains(s string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, t := range m.texts {
		if strings.Contains(s, t) {
			return true
		}
	}
	return false
}

// Value returns v, a JSON-like value (string, float64, bool, nil, []any,
// map[string]any), with its strings masked. A number or boolean that is
// itself a hidden text becomes Mask. v is not changed.
func (m *Masker) Value(v any) any {
	switch v := v.(type) {
	case string:
		return m.String(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			out[k] = m.Value(item)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = m.Value(item)
		}
		return out
	case nil:
		return nil
	}
	b, err := json.Marshal(v)
	if err == nil && m.String(string(b)) != string(b) {
		return Mask
	}
	return v
}

// Transforms lists the obvious disguises of s that a workflow may write
// out: upper and lower case, reversed, base64 (standard and URL, with and
// without padding), URL-encoded and JSON-quoted. A text shorter than
// MinDerived has none: its transforms would hide common words.
func Transforms(s string) []string {
	if len(s) < MinDerived {
		return nil
	}
	quoted, _ := json.Marshal(s)
	out := []string{
		strings.ToUpper(s),
		strings.ToLower(s),
		reverse(s),
		base64.StdEncoding.EncodeToString([]byte(s)),
		base64.RawStdEncoding.EncodeToString([]byte(s)),
		base64.URLEncoding.EncodeToString([]byte(s)),
		base64.RawURLEncoding.EncodeToString([]byte(s)),
		url.QueryEscape(s),
		url.PathEscape(s),
		string(quoted[1 : len(quoted)-1]),
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(t string) bool { return t == s || t == "" })
}

func reverse(s string) string {
	r := []rune(s)
	slices.Reverse(r)
	return string(r)
}
