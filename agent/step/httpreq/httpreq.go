// Package httpreq holds the http.request step: one HTTP call whose status,
// headers and body become outputs, with a JSON response parsed for the
// expressions that follow. A 4xx or 5xx status is an answer like any other
// unless fail_on_status asks otherwise, because RPA workflows often branch
// on it (a 404 meaning "no such invoice").
package httpreq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/files"
)

const (
	// MaxBody is the largest response body kept in the outputs; a bigger
	// one belongs in a file (save_to).
	MaxBody = 32 << 20
	// defaultTimeout bounds a request that names no timeout.
	defaultTimeout = 30 * time.Second
	// snippetLen is how much of an error response a message quotes.
	snippetLen = 200
)

// Actions returns the http.* steps.
func Actions() []*step.Action {
	return []*step.Action{requestAction}
}

type requestParams struct {
	Method       string         `json:"method" doc:"HTTP method. Default GET."`
	URL          string         `json:"url" step:"required" doc:"Absolute http or https URL."`
	Headers      map[string]any `json:"headers" doc:"Request headers by name; a list gives a header several values."`
	Query        map[string]any `json:"query" doc:"Query parameters added to the URL's own; a list repeats the parameter."`
	Body         *string        `json:"body" doc:"Request body as text. Not with json."`
	JSON         any            `json:"json" doc:"Request body encoded as JSON, with Content-Type application/json unless headers set one. Not with body."`
	Timeout      step.Duration  `json:"timeout" doc:"How long the whole exchange may take, body included. Default 30s."`
	FailOnStatus bool           `json:"fail_on_status" doc:"Fail on a 4xx status (a business error) or 5xx status (an application error, so retry applies); without it every status is returned in the outputs."`
	SaveTo       string         `json:"save_to" doc:"Write the response body to this file (confined like file.write) instead of the body output; no size limit applies."`
}

type requestOutputs struct {
	Status  int               `json:"status" doc:"HTTP status code."`
	Headers map[string]string `json:"headers" doc:"Response headers, the first value of each, by canonical name (Content-Type)."`
	Body    string            `json:"body" doc:"Response body as text; empty with save_to."`
	JSON    any               `json:"json,omitempty" doc:"The body parsed, when the response's Content-Type is JSON; absent otherwise."`
	Path    string            `json:"path,omitempty" doc:"With save_to: the absolute path of the saved body."`
	Size    int64             `json:"size" doc:"Body size in bytes."`
}

var requestAction = step.Define("http.request", "Sends an HTTP request and returns the status, headers and body.",
	request,
	step.Rejects("the url, method, headers or query are malformed, or both body and json are given"),
	step.Rejects("fail_on_status is set and the status is 4xx"),
	step.Rejects("the response body is larger than 32 MiB and save_to is not set"),
	step.Rejects("save_to is outside the job's work directory and the allowed roots"),
	step.Fails("the connection fails or no response comes within the timeout"),
	step.Fails("fail_on_status is set and the status is 5xx"))

// client follows redirects (up to ten, the net/http default) and shares
// connections between the requests of every job on the robot.
var client = &http.Client{}

func request(ctx context.Context, env *step.Env, p requestParams) (requestOutputs, error) {
	req, err := newRequest(ctx, p)
	if err != nil {
		return requestOutputs{}, err
	}
	saveTo := ""
	if p.SaveTo != "" {
		if saveTo, err = files.ResolveParam(env, "save_to", p.SaveTo); err != nil {
			return requestOutputs{}, err
		}
	}
	timeout := p.Timeout.D()
	if timeout == 0 {
		timeout = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req = req.WithContext(ctx)

	resp, err := client.Do(req)
	if err != nil {
		return requestOutputs{}, transportProblem(ctx, req, timeout, err)
	}
	defer resp.Body.Close()

	out := requestOutputs{Status: resp.StatusCode, Headers: map[string]string{}}
	for name, values := range resp.Header {
		if len(values) > 0 {
			out.Headers[name] = values[0]
		}
	}
	if saveTo != "" {
		if err := save(saveTo, resp.Body, &out.Size); err != nil {
			if ctx.Err() != nil {
				return requestOutputs{}, transportProblem(ctx, req, timeout, err)
			}
			return requestOutputs{}, step.Failf("%s %s: save the body to %s: %w", req.Method, redact(req.URL), p.SaveTo, err)
		}
		out.Path = saveTo
	} else {
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
		if err != nil {
			return requestOutputs{}, transportProblem(ctx, req, timeout, err)
		}
		if len(body) > MaxBody {
			return requestOutputs{}, step.Businessf("%s %s: the response body is larger than %d MiB; set save_to to write it to a file", req.Method, redact(req.URL), MaxBody>>20)
		}
		out.Body, out.Size = string(body), int64(len(body))
		if isJSON(resp.Header.Get("Content-Type")) && len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, &out.JSON); err != nil {
				env.Logf("warn", "http.request: %s %s: the response says it is JSON but is not: %v", req.Method, redact(req.URL), err)
				out.JSON = nil
			}
		}
	}
	if p.FailOnStatus && resp.StatusCode >= 400 {
		msg := fmt.Sprintf("%s %s: %s", req.Method, redact(req.URL), resp.Status)
		if snippet := snippet(out.Body); snippet != "" {
			msg += ": " + snippet
		}
		if resp.StatusCode < 500 {
			return requestOutputs{}, step.Businessf("%s", msg)
		}
		return requestOutputs{}, step.Failf("%s", msg)
	}
	return out, nil
}

// newRequest builds the request from the parameters, naming the parameter
// that is wrong.
func newRequest(ctx context.Context, p requestParams) (*http.Request, error) {
	method := strings.ToUpper(strings.TrimSpace(p.Method))
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return nil, step.Businessf("with.method: %q is not an HTTP method", p.Method)
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		return nil, step.Businessf("with.url: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, step.Businessf("with.url: %q is not an absolute http or https URL", p.URL)
	}
	if len(p.Query) > 0 {
		q := u.Query()
		for name, v := range p.Query {
			values, err := stringValues(v)
			if err != nil {
				return nil, step.Businessf("with.query.%s: %v", name, err)
			}
			for _, value := range values {
				q.Add(name, value)
			}
		}
		u.RawQuery = q.Encode()
	}

	var body io.Reader
	contentType := ""
	switch {
	case p.Body != nil && p.JSON != nil:
		return nil, step.Businessf("with: give body or json, not both")
	case p.Body != nil:
		body = strings.NewReader(*p.Body)
	case p.JSON != nil:
		data, err := json.Marshal(p.JSON)
		if err != nil {
			return nil, step.Businessf("with.json: %v", err)
		}
		body, contentType = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, step.Businessf("with.url: %v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for name, v := range p.Headers {
		if !validToken(name) {
			return nil, step.Businessf("with.headers: %q is not a header name", name)
		}
		values, err := stringValues(v)
		if err != nil {
			return nil, step.Businessf("with.headers.%s: %v", name, err)
		}
		req.Header.Del(name)
		for _, value := range values {
			if strings.ContainsAny(value, "\r\n") {
				return nil, step.Businessf("with.headers.%s: a header value cannot hold a line break", name)
			}
			req.Header.Add(name, value)
		}
	}
	// net/http sends req.Host, not a Host header, so a workflow that
	// names one (a virtual host behind an IP address) needs it moved.
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	return req, nil
}

// stringValues turns a header or query value (text, number, boolean, or a
// list of them) into the strings HTTP carries.
func stringValues(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'f', -1, 64)}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case nil:
		return nil, nil
	case []any:
		var out []string
		for _, item := range v {
			if _, nested := item.([]any); nested {
				return nil, errors.New("want text, a number, true or false, or a list of them")
			}
			values, err := stringValues(item)
			if err != nil {
				return nil, err
			}
			out = append(out, values...)
		}
		return out, nil
	}
	return nil, errors.New("want text, a number, true or false, or a list of them")
}

// validToken reports whether s is an RFC 9110 token, as methods and header
// names must be.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}

// save streams the body to path, replacing it only once the whole body
// has arrived.
func save(path string, body io.Reader, size *int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return files.WriteAtomic(path, 0o644, func(w io.Writer) error {
		n, err := io.Copy(w, body)
		*size = n
		return err
	})
}

// transportProblem describes a request that got no complete answer. All
// such failures are application errors: the network may do better next
// time.
func transportProblem(ctx context.Context, req *http.Request, timeout time.Duration, err error) error {
	target := req.Method + " " + redact(req.URL)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return step.Failf("%s: no complete response within %s", target, timeout)
	}
	if ctx.Err() != nil {
		return step.Failf("%s: %w", target, ctx.Err())
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return step.Failf("%s: no complete response within %s", target, timeout)
	}
	return step.Failf("%s: %w", target, err)
}

// redact drops the password from a URL before it reaches a log or an
// error.
func redact(u *url.URL) string { return u.Redacted() }

func snippet(body string) string {
	body = strings.Join(strings.Fields(body), " ")
	if runes := []rune(body); len(runes) > snippetLen {
		body = string(runes[:snippetLen]) + "…"
	}
	return body
}
