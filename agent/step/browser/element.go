package browser

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/casarerpa/casare/agent/step"
)

// element prepares an action on an element: it checks the parameters,
// then starts or finds the job's browser.
func (a *actions) element(ctx context.Context, env *step.Env, action, sel, by string, timeout step.Duration) (turn, selector, time.Duration, error) {
	s, err := newSelector(action, sel, by)
	if err != nil {
		return turn{}, s, 0, err
	}
	limit := limitOf(timeout)
	b, err := a.acquire(ctx, env, limit)
	if err != nil {
		return turn{}, s, limit, failed(action, nil, limit, err)
	}
	return b, s, limit, nil
}

type clickParams struct {
	Selector string        `json:"selector" step:"required" doc:"The element to click: a CSS selector, or an XPath expression when by is xpath."`
	By       string        `json:"by" doc:"How to read selector: css (default) or xpath."`
	Timeout  step.Duration `json:"timeout" doc:"Limit for the element to become visible and be clicked; default 30s."`
}

func (a *actions) click(ctx context.Context, env *step.Env, p clickParams) (none, error) {
	b, sel, limit, err := a.element(ctx, env, "browser.click", p.Selector, p.By, p.Timeout)
	if err != nil {
		return none{}, err
	}
	err = b.do(ctx, func(ctx context.Context) error {
		if err := sel.wait(ctx, stateVisible, limit); err != nil {
			return err
		}
		return chromedp.Do(ctx, chromedp.Click(sel.first()))
	})
	return none{}, failed(sel.action, &sel, limit, err)
}

type typeParams struct {
	Selector   string        `json:"selector" step:"required" doc:"The field to type into: a CSS selector, or an XPath expression when by is xpath."`
	Text       string        `json:"text" step:"required" doc:"What to type; a newline presses Enter."`
	Clear      *bool         `json:"clear" doc:"Empty the field first; default true."`
	PressEnter bool          `json:"press_enter" doc:"Press Enter after the text, which submits most forms."`
	By         string        `json:"by" doc:"How to read selector: css (default) or xpath."`
	Timeout    step.Duration `json:"timeout" doc:"Limit for the field to become visible and the typing to finish; default 30s."`
}

func (a *actions) typeText(ctx context.Context, env *step.Env, p typeParams) (none, error) {
	b, sel, limit, err := a.element(ctx, env, "browser.type", p.Selector, p.By, p.Timeout)
	if err != nil {
		return none{}, err
	}
	err = b.do(ctx, func(ctx context.Context) error {
		if err := sel.wait(ctx, stateVisible, limit); err != nil {
			return err
		}
		if p.Clear == nil || *p.Clear {
			if _, err := sel.ask(ctx, query{Op: "clear"}); err != nil {
				return err
			}
		}
		keys := p.Text
		if p.PressEnter {
			keys += kb.Enter
		}
		if keys == "" {
			return nil
		}
		return chromedp.Do(ctx, chromedp.SendKeys(sel.first(), keys))
	})
	return none{}, failed(sel.action, &sel, limit, err)
}

type selectParams struct {
	Selector string        `json:"selector" step:"required" doc:"The select element: a CSS selector, or an XPath expression when by is xpath."`
	Value    *string       `json:"value" doc:"The value attribute of the option to choose; give this or label."`
	Label    *string       `json:"label" doc:"The visible text of the option to choose; give this or value."`
	By       string        `json:"by" doc:"How to read selector: css (default) or xpath."`
	Timeout  step.Duration `json:"timeout" doc:"Limit for the element and the option to appear; default 30s."`
}

type selectOutputs struct {
	Value string `json:"value" doc:"The value of the chosen option."`
}

func (a *actions) selectOption(ctx context.Context, env *step.Env, p selectParams) (selectOutputs, error) {
	const action = "browser.select"
	if (p.Value == nil) == (p.Label == nil) {
		return selectOutputs{}, step.Businessf("%s: give with.value or with.label, not both or neither", action)
	}
	b, sel, limit, err := a.element(ctx, env, action, p.Selector, p.By, p.Timeout)
	if err != nil {
		return selectOutputs{}, err
	}
	q := query{Op: "select", Value: p.Value}
	want := ""
	if p.Label != nil {
		q.Label = *p.Label
		want = "label " + strconv.Quote(*p.Label)
	} else {
		want = "value " + strconv.Quote(*p.Value)
	}
	var out selectOutputs
	err = b.do(ctx, func(ctx context.Context) error {
		if err := sel.wait(ctx, statePresent, limit); err != nil {
			return err
		}
		// Options are often filled in by a script after the select
		// appears, so an option that is missing is waited for too.
		var last answer
		for {
			ans, err := sel.ask(ctx, q)
			if step.IsBusiness(err) {
				return err
			}
			if err == nil {
				last = ans
			}
			switch {
			case ans.NotSelect != "":
				return step.Businessf("%s: %s is a <%s>, not a <select>", action, sel, ans.NotSelect)
			case err == nil && ans.Count > 0 && ans.Options == nil:
				out.Value = ans.Value
				return nil
			}
			select {
			case <-ctx.Done():
				return step.Failf("%s: %s has no option with %s after %s; it has %s", action, sel, want, limit, optionList(last.Options))
			case <-time.After(pollInterval):
			}
		}
	})
	return out, failed(action, &sel, limit, err)
}

func optionList(options []string) string {
	if len(options) == 0 {
		return "no options"
	}
	return strings.Join(options, ", ")
}

type waitForParams struct {
	Selector string        `json:"selector" step:"required" doc:"The element to wait for: a CSS selector, or an XPath expression when by is xpath."`
	State    string        `json:"state" doc:"visible (default), present (in the page, shown or not), hidden (not shown or absent) or gone (absent)."`
	By       string        `json:"by" doc:"How to read selector: css (default) or xpath."`
	Timeout  step.Duration `json:"timeout" doc:"How long to wait; default 30s."`
}

type waitForOutputs struct {
	Found bool `json:"found" doc:"Whether an element matches the selector once the wait is over."`
}

func (a *actions) waitFor(ctx context.Context, env *step.Env, p waitForParams) (waitForOutputs, error) {
	const action = "browser.wait_for"
	state := p.State
	switch state {
	case "":
		state = stateVisible
	case stateVisible, statePresent, stateHidden, stateGone:
	default:
		return waitForOutputs{}, step.Businessf("%s: with.state: want visible, present, hidden or gone, got %q", action, p.State)
	}
	b, sel, limit, err := a.element(ctx, env, action, p.Selector, p.By, p.Timeout)
	if err != nil {
		return waitForOutputs{}, err
	}
	var out waitForOutputs
	err = b.do(ctx, func(ctx context.Context) error {
		if err := sel.wait(ctx, state, limit); err != nil {
			return err
		}
		out.Found = state == stateVisible || state == statePresent
		if state == stateHidden {
			ans, err := sel.ask(ctx, query{Op: "probe"})
			if err != nil {
				return err
			}
			out.Found = ans.Count > 0
		}
		return nil
	})
	return out, failed(action, &sel, limit, err)
}
