package browser

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/step"
)

// site is the pages the tests drive, served on loopback, and what its
// forms received.
type site struct {
	*httptest.Server
	mu       sync.Mutex
	received []url.Values
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{}
	mux := http.NewServeMux()
	page := func(path, body string) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, "<!doctype html><html><head><title>"+strings.TrimPrefix(path, "/")+"</title></head><body>"+body+"</body></html>")
		})
	}
	page("/form", `
		<form method="post" action="/submit">
		  <input id="name" name="name" value="placeholder">
		  <select id="country" name="country">
		    <option value="">choose</option><option value="de">Germany</option><option value="fr">France</option>
		  </select>
		  <button id="go" type="submit">Send</button>
		</form>`)
	page("/search", `<form method="post" action="/submit"><input id="q" name="q"></form>`)
	page("/table", `
		<table id="people">
		  <thead><tr><th>Name</th><th>Age</th></tr></thead>
		  <tbody><tr><td>Ada</td><td> 36 </td></tr><tr><td>Alan</td><td>41</td></tr></tbody>
		</table>
		<table id="plain"><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>`)
	page("/items", `
		<ul>
		  <li class="item" data-sku="A1"><span class="name">Pen</span> <a href="/p/a1">more</a> <span class="price">1.50</span></li>
		  <li class="item" data-sku="B2"><span class="name">Ink</span> <a href="/p/b2">more</a> <span class="price">3.00</span></li>
		  <li class="item" data-sku="C3"><span class="name">Pad</span> <a href="/p/c3">more</a></li>
		</ul>
		<p id="greeting" title="hi there">  Hello <b>world</b> </p>
		<input id="filled" value="typed">`)
	page("/slow", `
		<div id="vanish">soon gone</div>
		<script>setTimeout(() => {
		  const d = document.createElement("div"); d.id = "late"; d.textContent = "here"; document.body.appendChild(d);
		  document.getElementById("vanish").remove();
		}, 300)</script>`)
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.received = append(s.received, r.PostForm)
		s.mu.Unlock()
		fmt.Fprint(w, `<!doctype html><title>thanks</title><h1 id="done">thanks</h1>`)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *site) lastForm() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.received) == 0 {
		return nil
	}
	return s.received[len(s.received)-1]
}

// bundle is one job's view of the browser steps.
type bundle struct {
	env     *step.Env
	actions step.Catalogue
}

// setup gives a job with its own work directory and browser; the browser
// is closed with the job when the test ends. A robot without Chromium
// fails the test: the browser steps are part of the product.
func setup(t *testing.T) *bundle {
	t.Helper()
	found := candidates()
	if len(found) == 0 {
		t.Fatalf("no chromium on PATH (looked for %v): install it, e.g. apt-get install chromium", binaryNames)
	}
	env := &step.Env{JobID: "job-1", WorkDir: t.TempDir(), Log: func(level, msg string) { t.Logf("%s: %s", level, msg) }}
	t.Cleanup(func() { env.Close() })
	return &bundle{env: env, actions: step.NewCatalogue(Actions(Config{Chromium: found[0], Headless: true})...)}
}

func (b *bundle) run(t *testing.T, ctx context.Context, name string, with map[string]any) (map[string]any, error) {
	t.Helper()
	a, err := b.actions.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Run(ctx, b.env, with)
}

// must runs an action that has to succeed.
func (b *bundle) must(t *testing.T, name string, with map[string]any) map[string]any {
	t.Helper()
	out, err := b.run(t, context.Background(), name, with)
	if err != nil {
		t.Fatalf("%s %v: %v", name, with, err)
	}
	return out
}

// wantErr checks an action fails with an error of the right kind that
// says each of the words.
func wantErr(t *testing.T, err error, business bool, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", words)
	}
	if step.IsBusiness(err) != business {
		t.Errorf("business = %v, want %v: %v", step.IsBusiness(err), business, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

// TestSteps drives one browser through the pages, as a job would; its
// subtests run in order on the same tab.
func TestSteps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site := newSite(t)
	var artifacts []string
	var artifactData [][]byte
	b.env.SaveArtifact = func(name, contentType string, data []byte) error {
		if contentType != "image/png" {
			t.Errorf("artifact %s has type %s", name, contentType)
		}
		artifacts = append(artifacts, name)
		artifactData = append(artifactData, data)
		return nil
	}

	t.Run("OpenSizesTheViewport", func(t *testing.T) {
		out := b.must(t, "browser.open", map[string]any{"width": 800.0, "height": 600.0})
		if out["url"] != "about:blank" {
			t.Errorf("url = %v", out["url"])
		}
		size := b.must(t, "browser.evaluate", map[string]any{"script": "[innerWidth, innerHeight]"})["result"]
		if fmt.Sprint(size) != "[800 600]" {
			t.Errorf("viewport = %v, want [800 600]", size)
		}
	})

	t.Run("FillsAndSubmitsAForm", func(t *testing.T) {
		nav := b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/form"})
		if nav["title"] != "form" || nav["status"] != 200.0 || nav["url"] != site.URL+"/form" {
			t.Errorf("navigate outputs = %v", nav)
		}
		b.must(t, "browser.type", map[string]any{"selector": "#name", "text": "Grace Hopper"})
		sel := b.must(t, "browser.select", map[string]any{"selector": "#country", "label": "France"})
		if sel["value"] != "fr" {
			t.Errorf("select value = %v, want fr", sel["value"])
		}
		b.must(t, "browser.click", map[string]any{"selector": "#go"})
		b.must(t, "browser.wait_for", map[string]any{"selector": "#done"})
		got := site.lastForm()
		if got.Get("name") != "Grace Hopper" || got.Get("country") != "fr" {
			t.Errorf("the server received %v, want name=Grace Hopper country=fr", got)
		}
	})

	t.Run("PressEnterSubmits", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/search"})
		b.must(t, "browser.type", map[string]any{"selector": "//input[@id='q']", "by": "xpath", "text": "invoices", "press_enter": true})
		b.must(t, "browser.wait_for", map[string]any{"selector": "#done"})
		if got := site.lastForm().Get("q"); got != "invoices" {
			t.Errorf("the server received q=%q, want invoices", got)
		}
	})

	t.Run("SelectByValueAndMissingOption", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/form"})
		if out := b.must(t, "browser.select", map[string]any{"selector": "#country", "value": "de"}); out["value"] != "de" {
			t.Errorf("value = %v", out["value"])
		}
		_, err := b.run(t, context.Background(), "browser.select", map[string]any{"selector": "#country", "label": "Spain", "timeout": "200ms"})
		wantErr(t, err, false, "browser.select", `"#country"`, `label "Spain"`, "France (fr)")
		_, err = b.run(t, context.Background(), "browser.select", map[string]any{"selector": "#name", "value": "x"})
		wantErr(t, err, true, `"#name" is a <input>, not a <select>`)
	})

	t.Run("ScrapesATableAsObjects", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/table"})
		out := b.must(t, "browser.scrape", map[string]any{"selector": "#people"})
		if got := fmt.Sprint(out["rows"]); got != "[map[Age:36 Name:Ada] map[Age:41 Name:Alan]]" || out["count"] != 2.0 {
			t.Errorf("rows = %s, count = %v", got, out["count"])
		}
		out = b.must(t, "browser.scrape", map[string]any{"selector": "#plain", "header": false})
		if got := fmt.Sprint(out["rows"]); got != "[[a b] [c d]]" {
			t.Errorf("rows without header = %s", got)
		}
		// The rows themselves, as the design's example writes it.
		out = b.must(t, "browser.scrape", map[string]any{"selector": "#people tr"})
		if got := fmt.Sprint(out["rows"]); got != "[map[Age:36 Name:Ada] map[Age:41 Name:Alan]]" {
			t.Errorf("rows from tr = %s", got)
		}
		_, err := b.run(t, context.Background(), "browser.scrape", map[string]any{"selector": "td"})
		wantErr(t, err, true, "browser.scrape", `"td" matches a <td>`)
	})

	t.Run("ScrapesRepeatedElementsWithFields", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/items"})
		out := b.must(t, "browser.scrape", map[string]any{"selector": "li.item", "fields": map[string]any{
			"name": ".name", "price": "span.price", "link": "a@href", "sku": "@data-sku",
		}})
		want := "[map[link:/p/a1 name:Pen price:1.50 sku:A1] map[link:/p/b2 name:Ink price:3.00 sku:B2] map[link:/p/c3 name:Pad price:<nil> sku:C3]]"
		if got := fmt.Sprint(out["rows"]); got != want || out["count"] != 3.0 {
			t.Errorf("rows = %s, count %v\nwant %s", got, out["count"], want)
		}
		out = b.must(t, "browser.scrape", map[string]any{"selector": "li.nothing", "fields": map[string]any{"x": ".x"}, "wait": false})
		if out["count"] != 0.0 || fmt.Sprint(out["rows"]) != "[]" {
			t.Errorf("scrape of nothing = %v", out)
		}
	})

	t.Run("Extracts", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			with map[string]any
			want string
		}{
			{"Text", map[string]any{"selector": "#greeting"}, "Hello world [Hello world]"},
			{"Attribute", map[string]any{"selector": "#greeting", "attribute": "title"}, "hi there [hi there]"},
			{"MissingAttribute", map[string]any{"selector": "#greeting", "attribute": "lang"}, "<nil> [<nil>]"},
			{"LiveValue", map[string]any{"selector": "#filled", "attribute": "value"}, "typed [typed]"},
			{"All", map[string]any{"selector": "li .name", "all": true}, "Pen [Pen Ink Pad]"},
			{"XPath", map[string]any{"selector": "//li[@data-sku='B2']/a", "by": "xpath", "attribute": "href"}, "/p/b2 [/p/b2]"},
			{"NoMatchWithoutWaiting", map[string]any{"selector": ".none", "wait": false}, "<nil> []"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out := b.must(t, "browser.extract", tc.with)
				if got := fmt.Sprint(out["value"], " ", out["values"]); got != tc.want {
					t.Errorf("value values = %s, want %s", got, tc.want)
				}
			})
		}
	})

	t.Run("Evaluates", func(t *testing.T) {
		if got := b.must(t, "browser.evaluate", map[string]any{"script": "document.querySelectorAll('li.item').length"})["result"]; got != 3.0 {
			t.Errorf("result = %v, want 3", got)
		}
		got := b.must(t, "browser.evaluate", map[string]any{"script": "new Promise(r => setTimeout(() => r({ok: true, n: [1, 2]}), 20))"})["result"]
		if fmt.Sprint(got) != "map[n:[1 2] ok:true]" {
			t.Errorf("awaited result = %v", got)
		}
		if out := b.must(t, "browser.evaluate", map[string]any{"script": "undefined"}); out["result"] != nil {
			t.Errorf("undefined gave %v", out["result"])
		}
		_, err := b.run(t, context.Background(), "browser.evaluate", map[string]any{"script": "(() => { throw new Error('boom') })()"})
		wantErr(t, err, true, "browser.evaluate", "boom")
	})

	t.Run("WaitsForASlowElement", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/slow", "wait_until": "none"})
		start := time.Now()
		if out := b.must(t, "browser.wait_for", map[string]any{"selector": "#late", "timeout": "5s"}); out["found"] != true {
			t.Errorf("found = %v", out["found"])
		}
		if waited := time.Since(start); waited > 4*time.Second {
			t.Errorf("waited %s for an element that appears after 300ms", waited)
		}
		if out := b.must(t, "browser.wait_for", map[string]any{"selector": "#vanish", "state": "gone"}); out["found"] != false {
			t.Errorf("gone: found = %v", out["found"])
		}
		if out := b.must(t, "browser.wait_for", map[string]any{"selector": "#late", "state": "present"}); out["found"] != true {
			t.Errorf("present: found = %v", out["found"])
		}
	})

	t.Run("TimesOutNamingTheSelector", func(t *testing.T) {
		start := time.Now()
		_, err := b.run(t, context.Background(), "browser.wait_for", map[string]any{"selector": "#never", "timeout": "400ms"})
		wantErr(t, err, false, "browser.wait_for", `no visible element matches "#never"`, "400ms")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("a 400ms wait took %s", took)
		}
		_, err = b.run(t, context.Background(), "browser.click", map[string]any{"selector": "#missing", "timeout": "300ms"})
		wantErr(t, err, false, "browser.click", `"#missing"`)
		_, err = b.run(t, context.Background(), "browser.wait_for", map[string]any{"selector": "#late", "state": "gone", "timeout": "300ms"})
		wantErr(t, err, false, `an element matching "#late" is still on the page`)
	})

	t.Run("RejectsSelectorsThatDoNotParse", func(t *testing.T) {
		_, err := b.run(t, context.Background(), "browser.click", map[string]any{"selector": "div[", "timeout": "5s"})
		wantErr(t, err, true, "browser.click", `"div[" is not a valid css selector`)
		_, err = b.run(t, context.Background(), "browser.extract", map[string]any{"selector": "//p[", "by": "xpath"})
		wantErr(t, err, true, "browser.extract", `xpath "//p["`)
	})

	t.Run("NavigationFailureIsAnApplicationError", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		_, err := b.run(t, context.Background(), "browser.navigate", map[string]any{"url": dead.URL + "/gone"})
		wantErr(t, err, false, "browser.navigate", dead.URL+"/gone", "did not load", "ERR_CONNECTION_REFUSED")
	})

	t.Run("Screenshots", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": site.URL + "/table"})
		full := b.must(t, "browser.screenshot", nil)
		elem := b.must(t, "browser.screenshot", map[string]any{"selector": "#people", "name": "people.png"})
		for i, out := range []map[string]any{full, elem} {
			path, _ := out["path"].(string)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
				t.Errorf("%s is not a PNG", path)
			}
			if out["bytes"] != float64(len(data)) {
				t.Errorf("bytes = %v, file has %d", out["bytes"], len(data))
			}
			if filepath.Dir(path) != b.env.WorkDir {
				t.Errorf("%s is not in the work directory %s", path, b.env.WorkDir)
			}
			if len(artifactData) <= i || !bytes.Equal(artifactData[i], data) {
				t.Errorf("artifact %d does not hold %s", i, path)
			}
		}
		if filepath.Base(full["path"].(string)) != "screenshot-1.png" || fmt.Sprint(artifacts) != "[screenshot-1.png people.png]" {
			t.Errorf("paths %v %v, artifacts %v", full["path"], elem["path"], artifacts)
		}
		if full["bytes"].(float64) <= elem["bytes"].(float64) {
			t.Errorf("the page (%v bytes) is no bigger than one table (%v bytes)", full["bytes"], elem["bytes"])
		}
		_, err := b.run(t, context.Background(), "browser.screenshot", map[string]any{"name": "../out.png"})
		wantErr(t, err, true, `"../out.png" is not a plain file name`)
	})
	t.Run("StepsTakeTurnsOnTheTab", func(t *testing.T) {
		// Parallel foreach iterations share the job's tab: one waits for
		// the other, and the waiting counts against its own timeout.
		holding := make(chan error, 1)
		go func() {
			_, err := b.run(t, context.Background(), "browser.wait_for", map[string]any{"selector": "#never", "timeout": "1500ms"})
			holding <- err
		}()
		time.Sleep(200 * time.Millisecond)
		_, err := b.run(t, context.Background(), "browser.extract", map[string]any{"selector": "#people td", "timeout": "300ms"})
		wantErr(t, err, false, "browser.extract", "not done within 300ms")
		wantErr(t, <-holding, false, `no visible element matches "#never"`)
		if out := b.must(t, "browser.extract", map[string]any{"selector": "#people td"}); out["value"] != "Ada" {
			t.Errorf("after the turn: value = %v", out["value"])
		}
	})

	testLifecycle(t, b)
}

// TestRejectsBadParameters needs no browser: the parameters are checked
// before one starts.
func TestRejectsBadParameters(t *testing.T) {
	t.Parallel()
	env := &step.Env{WorkDir: t.TempDir()}
	t.Cleanup(func() { env.Close() })
	acts := step.NewCatalogue(Actions(Config{Chromium: "/nonexistent/chromium", Headless: true})...)
	for _, tc := range []struct {
		name   string
		action string
		with   map[string]any
		want   string
	}{
		{"MissingSelector", "browser.click", map[string]any{}, "with.selector: required"},
		{"BlankSelector", "browser.click", map[string]any{"selector": "  "}, "browser.click: with.selector: required"},
		{"UnknownBy", "browser.extract", map[string]any{"selector": "p", "by": "regex"}, `browser.extract: with.by: want css or xpath, got "regex"`},
		{"UnknownState", "browser.wait_for", map[string]any{"selector": "p", "state": "blue"}, `with.state: want visible, present, hidden or gone, got "blue"`},
		{"MissingURL", "browser.navigate", map[string]any{}, "with.url: required"},
		{"RelativeURL", "browser.navigate", map[string]any{"url": "example.com/a"}, `"example.com/a" is not absolute; write https://example.com/a`},
		{"OddScheme", "browser.open", map[string]any{"url": "ftp://example.com"}, "want an http, https, file, about or data URL"},
		{"BadWaitUntil", "browser.navigate", map[string]any{"url": "http://x.test", "wait_until": "idle"}, `with.wait_until: want load or none, got "idle"`},
		{"ValueAndLabel", "browser.select", map[string]any{"selector": "s", "value": "a", "label": "A"}, "give with.value or with.label, not both or neither"},
		{"NeitherValueNorLabel", "browser.select", map[string]any{"selector": "s"}, "give with.value or with.label"},
		{"MissingText", "browser.type", map[string]any{"selector": "#q"}, "with.text: required"},
		{"MissingScript", "browser.evaluate", map[string]any{}, "with.script: required"},
		{"NameWithDirectory", "browser.screenshot", map[string]any{"name": "a/b.png"}, `"a/b.png" is not a plain file name`},
		{"BadTimeout", "browser.click", map[string]any{"selector": "p", "timeout": "soon"}, `"soon" is not a duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := acts.Lookup(tc.action)
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.Run(context.Background(), env, tc.with)
			wantErr(t, err, true, tc.want)
		})
	}
}

func TestBrowserThatDoesNotStart(t *testing.T) {
	t.Parallel()
	env := &step.Env{WorkDir: t.TempDir()}
	t.Cleanup(func() { env.Close() })
	acts := step.NewCatalogue(Actions(Config{Chromium: "/nonexistent/chromium", Headless: true})...)
	a, _ := acts.Lookup("browser.navigate")
	_, err := a.Run(context.Background(), env, map[string]any{"url": "http://127.0.0.1/"})
	wantErr(t, err, false, "browser.navigate: start /nonexistent/chromium")
}

func TestActionsAreDocumented(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, a := range Actions(Config{Headless: true}) {
		names[a.Name] = true
		if a.Capability != "browser" {
			t.Errorf("%s needs capability %q, want browser", a.Name, a.Capability)
		}
		if a.Summary == "" || a.Params == nil || a.Outputs == nil {
			t.Errorf("%s: summary %q, params %v, outputs %v", a.Name, a.Summary, a.Params, a.Outputs)
		}
		for _, f := range append(step.Fields(a.Params), step.Fields(a.Outputs)...) {
			if f.Doc == "" {
				t.Errorf("%s: %s has no doc", a.Name, f.Name)
			}
		}
		for _, f := range step.Fields(a.Params) {
			if f.Name == "timeout" && f.Type != "duration" {
				t.Errorf("%s: timeout is a %s", a.Name, f.Type)
			}
		}
	}
	for _, want := range []string{"open", "navigate", "click", "type", "select", "wait_for", "scrape", "extract", "screenshot", "evaluate", "close"} {
		if !names["browser."+want] {
			t.Errorf("browser.%s is not defined", want)
		}
	}
}

func TestFind(t *testing.T) {
	t.Parallel()
	t.Run("SearchesPath", func(t *testing.T) {
		t.Parallel()
		path, err := Find("")
		if err != nil {
			t.Fatalf("Find(\"\"): %v", err)
		}
		if path != "/usr/bin/chromium" {
			t.Errorf("Find(\"\") = %s, want /usr/bin/chromium", path)
		}
	})
	t.Run("MissingPath", func(t *testing.T) {
		t.Parallel()
		_, err := Find("/nonexistent")
		if err == nil || !strings.Contains(err.Error(), "chromium /nonexistent:") {
			t.Fatalf("err = %v, want one naming the path", err)
		}
	})
	t.Run("NotABrowser", func(t *testing.T) {
		t.Parallel()
		// A binary that runs but is no browser must not pass for one.
		_, err := Find("/bin/true")
		if err == nil || !strings.Contains(err.Error(), "printed no page") {
			t.Fatalf("err = %v, want one saying it printed no page", err)
		}
	})
}
