package browser

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/casarerpa/casare/agent/step"
)

// pageJS answers the element queries of the steps inside the page: one
// round trip finds the elements (CSS or XPath alike) and reads what the
// step wants from them.
//
//go:embed page.js
var pageJS string

// pollInterval is how often a wait looks at the page again.
const pollInterval = 50 * time.Millisecond

// query is a request to pageJS.
type query struct {
	Op     string            `json:"op"`
	Sel    string            `json:"sel"`
	By     string            `json:"by"`
	Attr   string            `json:"attr,omitempty"`
	All    bool              `json:"all,omitempty"`
	Header *bool             `json:"header,omitempty"`
	Fields map[string]string `json:"fields,omitempty"`
	Value  *string           `json:"value,omitempty"`
	Label  string            `json:"label,omitempty"`
}

// answer is what pageJS found.
type answer struct {
	Invalid   string   `json:"invalid"`
	Count     int      `json:"count"`
	Visible   bool     `json:"visible"`
	Values    []any    `json:"values"`
	Rows      []any    `json:"rows"`
	NotTable  string   `json:"notTable"`
	NotSelect string   `json:"notSelect"`
	Options   []string `json:"options"`
	Value     string   `json:"value"`
}

// selector is a validated selector parameter, with the action it belongs
// to so that every message names both.
type selector struct {
	action string
	sel    string
	by     string // css or xpath
}

// newSelector checks the selector and by parameters of action. An empty
// selector or an unknown by is a business error.
func newSelector(action, sel, by string) (selector, error) {
	if strings.TrimSpace(sel) == "" {
		return selector{}, step.Businessf("%s: with.selector: required", action)
	}
	switch by {
	case "", "css":
		by = "css"
	case "xpath":
	default:
		return selector{}, step.Businessf("%s: with.by: want css or xpath, got %q", action, by)
	}
	return selector{action: action, sel: sel, by: by}, nil
}

// String names the selector in messages: "#submit" or xpath "//button".
func (s selector) String() string {
	if s.by == "xpath" {
		return "xpath " + strconv.Quote(s.sel)
	}
	return strconv.Quote(s.sel)
}

// first is the selector as chromedp's element actions take it: an
// expression for the first matching element. The selector enters it as a
// JSON string literal, never as code.
func (s selector) first() chromedp.JSPath {
	lit, _ := json.Marshal(s.sel)
	if s.by == "xpath" {
		return chromedp.JSPath(fmt.Sprintf("document.evaluate(%s, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue", lit))
	}
	return chromedp.JSPath(fmt.Sprintf("document.querySelector(%s)", lit))
}

// ask runs one query in the page. A selector that does not parse is a
// business error naming it.
func (s selector) ask(ctx context.Context, q query) (answer, error) {
	q.Sel, q.By = s.sel, s.by
	data, err := json.Marshal(q)
	if err != nil {
		return answer{}, err
	}
	a, err := chromedp.Run(ctx, chromedp.Evaluate[answer]("("+pageJS+")("+string(data)+")"))
	if err != nil {
		return answer{}, err
	}
	if a.Invalid != "" {
		return answer{}, step.Businessf("%s: %s is not a valid %s selector: %s", s.action, s, s.by, a.Invalid)
	}
	return a, nil
}

// Element states a step can wait for.
const (
	stateVisible = "visible"
	statePresent = "present"
	stateHidden  = "hidden"
	stateGone    = "gone"
)

// reached reports whether a probe of the page shows the state.
func reached(state string, a answer) bool {
	switch state {
	case stateVisible:
		return a.Visible
	case statePresent:
		return a.Count > 0
	case stateHidden:
		return !a.Visible
	case stateGone:
		return a.Count == 0
	}
	return false
}

// wait polls the page until the first element matching s is in state, or
// ctx ends. Running out of time is an application error that names the
// selector, the state and the limit; the page may simply be slow, so a
// retry can help. Errors while the page navigates (its scripts' context
// goes away) count as "not yet".
func (s selector) wait(ctx context.Context, state string, limit time.Duration) error {
	var lastErr error
	for {
		a, err := s.ask(ctx, query{Op: "probe"})
		if step.IsBusiness(err) {
			return err
		}
		if err == nil && reached(state, a) {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return s.timedOut(state, limit, lastErr)
		case <-time.After(pollInterval):
		}
	}
}

// timedOut is the error of a wait that ran out of time.
func (s selector) timedOut(state string, limit time.Duration, lastErr error) error {
	var what string
	switch state {
	case stateVisible:
		what = "no visible element matches " + s.String()
	case statePresent:
		what = "no element matches " + s.String()
	case stateHidden:
		what = "an element matching " + s.String() + " is still visible"
	case stateGone:
		what = "an element matching " + s.String() + " is still on the page"
	}
	msg := fmt.Sprintf("%s: %s after waiting %s for it to be %s", s.action, what, limit, state)
	if lastErr != nil && !errors.Is(lastErr, context.DeadlineExceeded) && !errors.Is(lastErr, context.Canceled) {
		msg += " (last error: " + lastErr.Error() + ")"
	}
	return &step.Error{Message: msg, Err: context.DeadlineExceeded}
}

// failed turns what went wrong in the browser into the step's error:
// errors already written for the step pass through, the rest become
// application errors naming the action and, when there is one, the
// selector.
func failed(action string, sel *selector, limit time.Duration, err error) error {
	if err == nil {
		return nil
	}
	var se *step.Error
	if errors.As(err, &se) {
		return err
	}
	where := action
	if sel != nil {
		where += " " + sel.String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return step.Failf("%s: not done within %s", where, limit)
	}
	return step.Failf("%s: %w", where, err)
}
