package browser

import (
	"context"
	"errors"
	"io"
	"net/url"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/casarerpa/casare/agent/step"
)

type openParams struct {
	URL     string        `json:"url" doc:"Page to open once the browser runs; none leaves about:blank (or the current page, when the browser is already open)."`
	Width   int           `json:"width" doc:"Viewport width in CSS pixels; 0 keeps 1280."`
	Height  int           `json:"height" doc:"Viewport height in CSS pixels; 0 keeps 800."`
	Timeout step.Duration `json:"timeout" doc:"Limit for starting the browser and loading the page; default 30s."`
}

type pageOutputs struct {
	URL   string `json:"url" doc:"The address of the page now shown, after redirects."`
	Title string `json:"title" doc:"The page's title."`
}

func (a *actions) open(ctx context.Context, env *step.Env, p openParams) (pageOutputs, error) {
	const action = "browser.open"
	if p.URL != "" {
		if err := checkURL(action, p.URL); err != nil {
			return pageOutputs{}, err
		}
	}
	if p.Width < 0 || p.Height < 0 {
		return pageOutputs{}, step.Businessf("%s: with.width and with.height: want sizes of 0 or more, got %dx%d", action, p.Width, p.Height)
	}
	limit := limitOf(p.Timeout)
	s, err := a.acquire(ctx, env, limit)
	if err != nil {
		return pageOutputs{}, failed(action, nil, limit, err)
	}
	var out pageOutputs
	err = s.do(ctx, func(ctx context.Context) error {
		if p.Width > 0 || p.Height > 0 {
			w, h := int64(p.Width), int64(p.Height)
			if w == 0 {
				w = 1280
			}
			if h == 0 {
				h = 800
			}
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(w, h)); err != nil {
				return err
			}
		}
		if p.URL != "" {
			if _, err := chromedp.Run(ctx, chromedp.NavigateResponse(p.URL)); err != nil {
				return loadFailed(action, p.URL, limit, err)
			}
		}
		var err error
		out, err = where(ctx)
		return err
	})
	return out, failed(action, nil, limit, err)
}

type navigateParams struct {
	URL       string        `json:"url" step:"required" doc:"The absolute address to open: https://..., http://..., file://..."`
	WaitUntil string        `json:"wait_until" doc:"load (default) waits for the page's load event; none returns once the navigation started."`
	Timeout   step.Duration `json:"timeout" doc:"Limit for the page to load; default 30s."`
}

type navigateOutputs struct {
	URL    string `json:"url" doc:"The address of the page now shown, after redirects."`
	Title  string `json:"title" doc:"The page's title."`
	Status int    `json:"status,omitempty" doc:"The HTTP status of the document, when it came over HTTP and wait_until is load."`
}

func (a *actions) navigate(ctx context.Context, env *step.Env, p navigateParams) (navigateOutputs, error) {
	const action = "browser.navigate"
	if err := checkURL(action, p.URL); err != nil {
		return navigateOutputs{}, err
	}
	switch p.WaitUntil {
	case "", "load", "none":
	default:
		return navigateOutputs{}, step.Businessf("%s: with.wait_until: want load or none, got %q", action, p.WaitUntil)
	}
	limit := limitOf(p.Timeout)
	s, err := a.acquire(ctx, env, limit)
	if err != nil {
		return navigateOutputs{}, failed(action, nil, limit, err)
	}
	var out navigateOutputs
	err = s.do(ctx, func(ctx context.Context) error {
		if p.WaitUntil == "none" {
			_, err := chromedp.Run(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				res, err := cdp.Call(ctx, t, page.Navigate, page.NavigateParams{URL: p.URL})
				if err == nil && res.ErrorText != "" {
					err = &chromedp.LoadError{ErrorText: res.ErrorText}
				}
				return err
			}))
			if err != nil {
				return loadFailed(action, p.URL, limit, err)
			}
		} else {
			resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(p.URL))
			if err != nil {
				return loadFailed(action, p.URL, limit, err)
			}
			if resp != nil {
				out.Status = int(resp.Status)
			}
		}
		at, err := where(ctx)
		if err != nil && p.WaitUntil == "none" {
			// The new document may be replacing the old one right now;
			// the step asked not to wait for it, so report where it goes.
			at, err = pageOutputs{URL: p.URL}, nil
		}
		out.URL, out.Title = at.URL, at.Title
		return err
	})
	return out, failed(action, nil, limit, err)
}

// checkURL accepts the absolute addresses a browser can open; anything
// else is a mistake in the workflow, not a failure of the site.
func checkURL(action, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return step.Businessf("%s: with.url: %q is not a URL: %v", action, raw, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return step.Businessf("%s: with.url: %q has no host", action, raw)
		}
	case "file", "about", "data":
	case "":
		return step.Businessf("%s: with.url: %q is not absolute; write https://%s", action, raw, raw)
	default:
		return step.Businessf("%s: with.url: %q: want an http, https, file, about or data URL", action, raw)
	}
	return nil
}

// loadFailed says why a page did not load. The site being down or slow is
// the system failing, so retry applies.
func loadFailed(action, raw string, limit time.Duration, err error) error {
	var le *chromedp.LoadError
	if errors.As(err, &le) {
		return step.Failf("%s: %s did not load: %s", action, raw, le.ErrorText)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return step.Failf("%s: %s did not load within %s", action, raw, limit)
	}
	return step.Failf("%s: %s did not load: %w", action, raw, err)
}

// where reads the address and title of the page the tab shows.
func where(ctx context.Context) (pageOutputs, error) {
	type at struct {
		URL   string `json:"url"`
		Title string `json:"title"`
	}
	v, err := chromedp.Run(ctx, chromedp.Evaluate[at](`({url: document.location.href, title: document.title})`))
	return pageOutputs(v), err
}

type closeParams struct{}

// errNotOpen tells closeBrowser that the job has no browser to close.
var errNotOpen = errors.New("no browser is open")

func (a *actions) closeBrowser(_ context.Context, env *step.Env, _ closeParams) (none, error) {
	r, err := env.Resource(resourceKey, func() (io.Closer, error) { return nil, errNotOpen })
	if errors.Is(err, errNotOpen) {
		return none{}, nil
	}
	if err != nil {
		return none{}, step.Failf("browser.close: %w", err)
	}
	closeErr := r.Close()
	env.Forget(resourceKey)
	if closeErr != nil {
		return none{}, step.Failf("browser.close: %w", closeErr)
	}
	return none{}, nil
}
