package artifact

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/casarerpa/casare/agent/step"
)

// saved is an artifact as SaveArtifact received it.
type saved struct {
	contentType string
	data        string
}

type bundle struct {
	env     *step.Env
	work    string
	mu      sync.Mutex
	saved   map[string]saved
	logs    []string
	refuse  error
	actions step.Catalogue
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{work: t.TempDir(), saved: map[string]saved{}, actions: step.NewCatalogue(Actions()...)}
	b.env = &step.Env{
		WorkDir: b.work,
		Log: func(level, message string) {
			b.mu.Lock()
			b.logs = append(b.logs, level+": "+message)
			b.mu.Unlock()
		},
		SaveArtifact: func(name, contentType string, data []byte) error {
			if b.refuse != nil {
				return b.refuse
			}
			b.mu.Lock()
			b.saved[name] = saved{contentType, string(data)}
			b.mu.Unlock()
			return nil
		},
	}
	return b
}

func (b *bundle) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.work, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) run(t *testing.T, with map[string]any) (map[string]any, error) {
	t.Helper()
	a, err := b.actions.Lookup("artifact.save")
	if err != nil {
		t.Fatal(err)
	}
	return a.Run(context.Background(), b.env, with)
}

func TestSave(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		with    map[string]any
		want    map[string]any
		saved   map[string]saved
		content string
	}{
		{"DefaultsFromTheFile", "report.csv", map[string]any{"path": "report.csv"},
			map[string]any{"name": "report.csv", "size": 7.0}, map[string]saved{"report.csv": {"text/csv; charset=utf-8", "a,b\n1,2"}}, "a,b\n1,2"},
		{"NameAndType", "out.bin", map[string]any{"path": "out.bin", "name": "export.json", "content_type": "application/x-custom"},
			map[string]any{"name": "export.json", "size": 2.0}, map[string]saved{"export.json": {"application/x-custom", "{}"}}, "{}"},
		{"TypeFromTheName", "out.bin", map[string]any{"path": "out.bin", "name": "page.html"},
			map[string]any{"name": "page.html", "size": 2.0}, map[string]saved{"page.html": {"text/html; charset=utf-8", "<p"}}, "<p"},
		{"UnknownExtension", "data.casare-unknown", map[string]any{"path": "data.casare-unknown"},
			map[string]any{"name": "data.casare-unknown", "size": 1.0}, map[string]saved{"data.casare-unknown": {"application/octet-stream", "x"}}, "x"},
		{"EmptyFile", "empty.txt", map[string]any{"path": "empty.txt"},
			map[string]any{"name": "empty.txt", "size": 0.0}, map[string]saved{"empty.txt": {"text/plain; charset=utf-8", ""}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t)
			b.write(t, tt.file, tt.content)
			out, err := b.run(t, tt.with)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out); diff != "" {
				t.Errorf("outputs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.saved, b.saved, cmp.AllowUnexported(saved{})); diff != "" {
				t.Errorf("saved (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSaveWithoutAControlPlane(t *testing.T) {
	b := setup(t)
	b.env.SaveArtifact = nil
	b.write(t, "shot.png", "png")
	out, err := b.run(t, map[string]any{"path": "shot.png"})
	if err != nil {
		t.Fatal(err)
	}
	if out["name"] != "shot.png" || out["size"] != 3.0 {
		t.Errorf("outputs %v", out)
	}
	if len(b.logs) != 1 || !strings.Contains(b.logs[0], "stays in the work directory") {
		t.Errorf("log %q, want a line saying the file stays in the work directory", b.logs)
	}
}

func TestSaveProblems(t *testing.T) {
	tests := []struct {
		name     string
		with     map[string]any
		prepare  func(t *testing.T, b *bundle)
		want     string
		business bool
	}{
		{"PathRequired", map[string]any{}, nil, "with.path: required", true},
		{"Missing", map[string]any{"path": "nope.txt"}, nil, "with.path: nope.txt does not exist", true},
		{"Directory", map[string]any{"path": "."}, nil, "is a directory", true},
		{"Outside", map[string]any{"path": "../../etc/passwd"}, nil, "outside the job's work directory", true},
		{"NameWithSlash", map[string]any{"path": "a.txt", "name": "x/y.txt"}, nil, "with.name: artifact name \"x/y.txt\": a file name without slashes", true},
		{"NameTooLong", map[string]any{"path": "a.txt", "name": strings.Repeat("n", 201)}, nil, "over the 200 limit", true},
		{"TooBig", map[string]any{"path": "big.bin"}, func(t *testing.T, b *bundle) {
			f, err := os.Create(filepath.Join(b.work, "big.bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(64<<20 + 1); err != nil {
				t.Fatal(err)
			}
		}, "more than an artifact may hold (64 MiB)", true},
		{"Refused", map[string]any{"path": "a.txt"}, func(t *testing.T, b *bundle) {
			b.refuse = errors.New(`artifact "a.txt": the control plane refused it: this robot no longer holds the job`)
		}, "artifact.save: artifact \"a.txt\": the control plane refused it", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t)
			b.write(t, "a.txt", "a")
			if tt.prepare != nil {
				tt.prepare(t, b)
			}
			_, err := b.run(t, tt.with)
			var se *step.Error
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if !errors.As(err, &se) || se.Business != tt.business {
				t.Fatalf("error %#v: business %v, want %v", err, se != nil && se.Business, tt.business)
			}
			if len(b.saved) != 0 {
				t.Fatalf("saved %v after an error", b.saved)
			}
		})
	}
}
