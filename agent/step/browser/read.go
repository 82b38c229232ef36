package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/chromedp/chromedp"

	"github.com/casarerpa/casare/agent/step"
)

type scrapeParams struct {
	Selector string            `json:"selector" step:"required" doc:"Without fields: a table element, or its rows (table tr). With fields: the repeated elements, one row each."`
	Fields   map[string]string `json:"fields" doc:"Column name to sub-selector inside each element; a trailing @name reads that attribute (a@href), @name alone the element's own, empty its text."`
	Header   *bool             `json:"header" doc:"For tables: take column names from the th row, or else the first row (default true); false gives every row as a list of cells."`
	Wait     *bool             `json:"wait" doc:"Wait until the selector matches (default true); false reads the page as it is, so no match gives no rows."`
	By       string            `json:"by" doc:"How to read selector and fields: css (default) or xpath."`
	Timeout  step.Duration     `json:"timeout" doc:"Limit for the selector to match and the reading to finish; default 30s."`
}

type scrapeOutputs struct {
	Rows  []any `json:"rows" doc:"One object per row (column name to text), or one list of cells per row when header is false."`
	Count int   `json:"count" doc:"How many rows."`
}

func (a *actions) scrape(ctx context.Context, env *step.Env, p scrapeParams) (scrapeOutputs, error) {
	const action = "browser.scrape"
	for name := range p.Fields {
		if name == "" {
			return scrapeOutputs{}, step.Businessf("%s: with.fields: a field has an empty name", action)
		}
	}
	b, sel, limit, err := a.element(ctx, env, action, p.Selector, p.By, p.Timeout)
	if err != nil {
		return scrapeOutputs{}, err
	}
	var out scrapeOutputs
	err = b.do(ctx, func(ctx context.Context) error {
		if p.Wait == nil || *p.Wait {
			if err := sel.wait(ctx, statePresent, limit); err != nil {
				return err
			}
		}
		ans, err := sel.ask(ctx, query{Op: "scrape", Fields: p.Fields, Header: p.Header})
		if err != nil {
			return err
		}
		if ans.NotTable != "" {
			return step.Businessf("%s: %s matches a <%s>, not a table or table rows; give with.fields to read repeated elements", action, sel, ans.NotTable)
		}
		out.Rows, out.Count = ans.Rows, len(ans.Rows)
		if out.Rows == nil {
			out.Rows = []any{}
		}
		return nil
	})
	return out, failed(action, &sel, limit, err)
}

type extractParams struct {
	Selector  string        `json:"selector" step:"required" doc:"The element to read: a CSS selector, or an XPath expression when by is xpath."`
	Attribute string        `json:"attribute" doc:"The attribute to read; value reads a form field's current value. Default: the element's text as shown, trimmed."`
	All       bool          `json:"all" doc:"Read every matching element, not only the first."`
	Wait      *bool         `json:"wait" doc:"Wait until the selector matches (default true); false reads the page as it is, so no match gives null and no values."`
	By        string        `json:"by" doc:"How to read selector: css (default) or xpath."`
	Timeout   step.Duration `json:"timeout" doc:"Limit for the selector to match; default 30s."`
}

type extractOutputs struct {
	Value  any   `json:"value" doc:"What the first match holds; null for a missing attribute or no match."`
	Values []any `json:"values" doc:"What each match holds, in page order (only the first unless all is true)."`
}

func (a *actions) extract(ctx context.Context, env *step.Env, p extractParams) (extractOutputs, error) {
	const action = "browser.extract"
	b, sel, limit, err := a.element(ctx, env, action, p.Selector, p.By, p.Timeout)
	if err != nil {
		return extractOutputs{}, err
	}
	out := extractOutputs{Values: []any{}}
	err = b.do(ctx, func(ctx context.Context) error {
		if p.Wait == nil || *p.Wait {
			if err := sel.wait(ctx, statePresent, limit); err != nil {
				return err
			}
		}
		ans, err := sel.ask(ctx, query{Op: "extract", Attr: p.Attribute, All: p.All})
		if err != nil {
			return err
		}
		if len(ans.Values) > 0 {
			out.Value, out.Values = ans.Values[0], ans.Values
		}
		return nil
	})
	return out, failed(action, &sel, limit, err)
}

type evaluateParams struct {
	Script  string        `json:"script" step:"required" doc:"A JavaScript expression; a promise is awaited."`
	Timeout step.Duration `json:"timeout" doc:"Limit for the script to finish; default 30s."`
}

type evaluateOutputs struct {
	Result any `json:"result" doc:"The expression's value as JSON (null for undefined)."`
}

func (a *actions) evaluate(ctx context.Context, env *step.Env, p evaluateParams) (evaluateOutputs, error) {
	const action = "browser.evaluate"
	if strings.TrimSpace(p.Script) == "" {
		return evaluateOutputs{}, step.Businessf("%s: with.script: required", action)
	}
	limit := limitOf(p.Timeout)
	b, err := a.acquire(ctx, env, limit)
	if err != nil {
		return evaluateOutputs{}, failed(action, nil, limit, err)
	}
	var out evaluateOutputs
	err = b.do(ctx, func(ctx context.Context) error {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](p.Script, chromedp.EvalAwaitPromise))
		var thrown *chromedp.ExceptionError
		if errors.As(err, &thrown) {
			// The workflow's own script is wrong for this page; running it
			// again would throw again.
			return step.Businessf("%s: the script threw: %s", action, thrown.Error())
		}
		out.Result = v
		return err
	})
	return out, failed(action, nil, limit, err)
}

type screenshotParams struct {
	Selector string        `json:"selector" doc:"The element to capture; none captures the whole page, beyond the viewport."`
	Name     string        `json:"name" doc:"File name in the job's directory; default screenshot-N.png with the next free N."`
	By       string        `json:"by" doc:"How to read selector: css (default) or xpath."`
	Timeout  step.Duration `json:"timeout" doc:"Limit for the element to become visible and the capture; default 30s."`
}

type screenshotOutputs struct {
	Path  string `json:"path" doc:"Where the PNG was written."`
	Bytes int    `json:"bytes" doc:"Its size."`
}

func (a *actions) screenshot(ctx context.Context, env *step.Env, p screenshotParams) (screenshotOutputs, error) {
	const action = "browser.screenshot"
	if p.Name != "" && (p.Name != filepath.Base(p.Name) || strings.ContainsAny(p.Name, `/\`) || p.Name == "." || p.Name == "..") {
		return screenshotOutputs{}, step.Businessf("%s: with.name: %q is not a plain file name", action, p.Name)
	}
	if env.WorkDir == "" {
		return screenshotOutputs{}, step.Failf("%s: the job has no work directory to save the screenshot in", action)
	}
	var sel *selector
	if p.Selector != "" {
		s, err := newSelector(action, p.Selector, p.By)
		if err != nil {
			return screenshotOutputs{}, err
		}
		sel = &s
	}
	limit := limitOf(p.Timeout)
	b, err := a.acquire(ctx, env, limit)
	if err != nil {
		return screenshotOutputs{}, failed(action, nil, limit, err)
	}
	var data []byte
	err = b.do(ctx, func(ctx context.Context) error {
		var err error
		if sel == nil {
			data, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
			return err
		}
		if err := sel.wait(ctx, stateVisible, limit); err != nil {
			return err
		}
		data, err = chromedp.Run(ctx, chromedp.Screenshot(sel.first()))
		return err
	})
	if err != nil {
		return screenshotOutputs{}, failed(action, sel, limit, err)
	}
	path, err := writeScreenshot(env.WorkDir, p.Name, b.session, data)
	if err != nil {
		return screenshotOutputs{}, step.Failf("%s: %w", action, err)
	}
	if env.SaveArtifact != nil {
		if err := env.SaveArtifact(filepath.Base(path), "image/png", data); err != nil {
			return screenshotOutputs{}, step.Failf("%s: save %s as an artifact: %w", action, filepath.Base(path), err)
		}
	}
	return screenshotOutputs{Path: path, Bytes: len(data)}, nil
}

// writeScreenshot writes data into dir as name, or as the next
// screenshot-N.png that does not exist yet, and returns the path.
func writeScreenshot(dir, name string, b *session, data []byte) (string, error) {
	if name != "" {
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, data, 0o644)
	}
	for {
		path := filepath.Join(dir, fmt.Sprintf("screenshot-%d.png", b.shots.Add(1)))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return path, err
	}
}
