package files

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/casarerpa/casare/agent/step"
)

// bundle is one job's view of the disk: a work directory, an allowed root
// beside it and a directory outside both.
type bundle struct {
	env     *step.Env
	work    string
	root    string
	outside string
	actions step.Catalogue
}

func setup(t *testing.T) *bundle {
	t.Helper()
	base := t.TempDir()
	b := &bundle{
		work:    filepath.Join(base, "work"),
		root:    filepath.Join(base, "shared"),
		outside: filepath.Join(base, "outside"),
		actions: step.NewCatalogue(Actions()...),
	}
	for _, dir := range []string{b.work, b.root, b.outside} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b.env = &step.Env{WorkDir: b.work, Roots: []string{b.root}}
	return b
}

func (b *bundle) run(t *testing.T, name string, with map[string]any) (map[string]any, error) {
	t.Helper()
	a, err := b.actions.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Run(context.Background(), b.env, with)
}

func (b *bundle) mustRun(t *testing.T, name string, with map[string]any) map[string]any {
	t.Helper()
	out, err := b.run(t, name, with)
	if err != nil {
		t.Fatalf("%s %v: %v", name, with, err)
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func wantBusiness(t *testing.T, err error, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a business error containing %q", contains)
	}
	if !step.IsBusiness(err) {
		t.Fatalf("err = %v, want a business error", err)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("err = %q, want it to contain %q", err, contains)
	}
}

func TestWriteThenRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out := b.mustRun(t, "file.write", map[string]any{"path": "out/deep/note.txt", "content": "héllo\n"})
	want := filepath.Join(b.work, "out", "deep", "note.txt")
	if out["path"] != want || out["size"] != float64(len("héllo\n")) {
		t.Fatalf("write outputs = %v, want path %s", out, want)
	}
	b.mustRun(t, "file.write", map[string]any{"path": "out/deep/note.txt", "content": "again", "append": true})
	out = b.mustRun(t, "file.read", map[string]any{"path": "out/deep/note.txt"})
	if out["content"] != "héllo\nagain" || out["size"] != float64(len("héllo\nagain")) {
		t.Fatalf("read outputs = %v", out)
	}
	b.mustRun(t, "file.write", map[string]any{"path": "out/deep/note.txt", "content": "replaced"})
	if out = b.mustRun(t, "file.read", map[string]any{"path": "out/deep/note.txt"}); out["content"] != "replaced" {
		t.Fatalf("after replace, content = %v", out["content"])
	}
	leftovers, _ := filepath.Glob(filepath.Join(b.work, "out", "deep", ".*.tmp"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
}

func TestBinaryRoundTripsThroughBase64(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := []byte{0, 0xff, 0xfe, 'x', 0x80}
	encoded := base64.StdEncoding.EncodeToString(data)
	b.mustRun(t, "file.write", map[string]any{"path": "blob.bin", "content": encoded, "encoding": "base64"})
	got, err := os.ReadFile(filepath.Join(b.work, "blob.bin"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("file = %v, %v", got, err)
	}
	_, err = b.run(t, "file.read", map[string]any{"path": "blob.bin"})
	wantBusiness(t, err, "with.path: blob.bin is not UTF-8 text; read it with encoding: base64")
	out := b.mustRun(t, "file.read", map[string]any{"path": "blob.bin", "encoding": "base64"})
	if out["content"] != encoded || out["size"] != float64(len(data)) {
		t.Fatalf("read outputs = %v", out)
	}
}

func TestReadRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, filepath.Join(b.outside, "secret.txt"), "secret")
	writeFile(t, filepath.Join(b.root, "shared.txt"), "shared")
	writeFile(t, filepath.Join(b.work, "plain.txt"), "plain")
	if err := os.Symlink(filepath.Join(b.outside, "secret.txt"), filepath.Join(b.work, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b.outside, filepath.Join(b.work, "linkdir")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		with map[string]any
		want string
	}{
		{"DotDot", map[string]any{"path": "../outside/secret.txt"}, "with.path: ../outside/secret.txt is outside the job's work directory and the allowed roots"},
		{"Absolute", map[string]any{"path": "/etc/passwd"}, "with.path: /etc/passwd is outside the job's work directory and the allowed roots"},
		{"SymlinkOut", map[string]any{"path": "link.txt"}, "with.path: link.txt is outside"},
		{"ThroughSymlinkedDir", map[string]any{"path": "linkdir/secret.txt"}, "with.path: linkdir/secret.txt is outside"},
		{"Missing", map[string]any{"path": "nope.txt"}, "with.path: nope.txt does not exist"},
		{"UnderAFile", map[string]any{"path": "plain.txt/x"}, "with.path: plain.txt/x does not exist"},
		{"Directory", map[string]any{"path": "."}, "with.path: . is a directory"},
		{"Required", map[string]any{}, "with.path: required"},
		{"Encoding", map[string]any{"path": "plain.txt", "encoding": "utf16"}, `with.encoding: "utf16" is not text or base64`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.run(t, "file.read", tc.with)
			wantBusiness(t, err, tc.want)
		})
	}
	t.Run("AllowedRoot", func(t *testing.T) {
		out := b.mustRun(t, "file.read", map[string]any{"path": filepath.Join(b.root, "shared.txt")})
		if out["content"] != "shared" {
			t.Fatalf("content = %v", out["content"])
		}
	})
	t.Run("DotDotBackIn", func(t *testing.T) {
		out := b.mustRun(t, "file.read", map[string]any{"path": "../work/plain.txt"})
		if out["content"] != "plain" {
			t.Fatalf("content = %v", out["content"])
		}
	})
}

func TestWriteCannotEscape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	target := filepath.Join(b.outside, "planted.txt")
	// A dangling link: writing through it would create its target outside.
	if err := os.Symlink(target, filepath.Join(b.work, "dangling.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b.outside, filepath.Join(b.work, "out")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"dangling.txt", "out/new.txt", "../outside/new.txt", filepath.Join(b.outside, "abs.txt")} {
		_, err := b.run(t, "file.write", map[string]any{"path": p, "content": "x"})
		wantBusiness(t, err, "with.path: "+p+" is outside")
	}
	entries, _ := os.ReadDir(b.outside)
	if len(entries) != 0 {
		t.Fatalf("files were written outside: %v", entries)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, name := range []string{"a.csv", "b.txt", "in/c.csv", "in/deep/d.csv", "in/deep/e.txt", "other/f.csv"} {
		writeFile(t, filepath.Join(b.work, name), name)
	}
	if err := os.Symlink(b.outside, filepath.Join(b.work, "escape")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.outside, "g.csv"), "outside")
	for _, tc := range []struct {
		name string
		with map[string]any
		want []string
	}{
		{"DefaultStar", map[string]any{}, []string{"a.csv", "b.txt", "escape"}},
		{"Extension", map[string]any{"pattern": "*.csv"}, []string{"a.csv"}},
		{"OneLevel", map[string]any{"pattern": "in/*.csv"}, []string{"in/c.csv"}},
		{"DoubleStar", map[string]any{"pattern": "**/*.csv"}, []string{"a.csv", "in/c.csv", "in/deep/d.csv", "other/f.csv"}},
		{"DoubleStarMiddle", map[string]any{"pattern": "in/**/*.txt"}, []string{"in/deep/e.txt"}},
		{"Dirs", map[string]any{"pattern": "in/*", "dirs": true}, []string{"in/c.csv", "in/deep"}},
		{"InDir", map[string]any{"pattern": "*.csv", "dir": "in/deep"}, []string{"d.csv"}},
		{"NoMatch", map[string]any{"pattern": "*.xlsx"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := b.mustRun(t, "file.list", tc.with)
			var got []string
			for _, f := range out["files"].([]any) {
				got = append(got, f.(string))
			}
			if !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
				t.Fatalf("files = %v, want %v", got, tc.want)
			}
			if out["count"] != float64(len(tc.want)) {
				t.Fatalf("count = %v, want %d", out["count"], len(tc.want))
			}
		})
	}
	for _, tc := range []struct {
		name string
		with map[string]any
		want string
	}{
		{"BadGlob", map[string]any{"pattern": "[a-"}, "with.pattern: [a- is not a valid glob"},
		{"Absolute", map[string]any{"pattern": "/etc/*"}, "with.pattern: /etc/* is absolute"},
		{"DotDot", map[string]any{"pattern": "../outside/*"}, "climbs out of dir"},
		{"DirOutside", map[string]any{"dir": "escape"}, "with.dir: escape is outside"},
		{"DirMissing", map[string]any{"dir": "nope"}, "with.dir: nope does not exist"},
		{"DirIsFile", map[string]any{"dir": "a.csv"}, "with.dir: a.csv is a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.run(t, "file.list", tc.with)
			wantBusiness(t, err, tc.want)
		})
	}
}

func TestMatchSegments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, path string
		match, below  bool
	}{
		{"*.csv", "a.csv", true, false},
		{"*.csv", "dir", false, false},
		{"**", "a/b/c", true, true},
		{"**/x", "x", true, true},
		{"a/**/x", "a/b/c/x", true, true},
		{"a/**/x", "b", false, false},
		{"a/*/x", "a/b", false, true},
		{"a/*/x", "a/b/c", false, false},
	} {
		pattern, parts := strings.Split(tc.pattern, "/"), strings.Split(tc.path, "/")
		if got := matchSegments(pattern, parts); got != tc.match {
			t.Errorf("matchSegments(%s, %s) = %v", tc.pattern, tc.path, got)
		}
		if got := couldMatchBelow(pattern, parts); got != tc.below {
			t.Errorf("couldMatchBelow(%s, %s) = %v", tc.pattern, tc.path, got)
		}
	}
}

func TestCopyAndMove(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, filepath.Join(b.work, "a.txt"), "alpha")
	writeFile(t, filepath.Join(b.work, "b.txt"), "beta")
	if err := os.Mkdir(filepath.Join(b.work, "box"), 0o755); err != nil {
		t.Fatal(err)
	}

	out := b.mustRun(t, "file.copy", map[string]any{"from": "a.txt", "to": "copies/a2.txt"})
	if out["path"] != filepath.Join(b.work, "copies", "a2.txt") || out["size"] != 5.0 {
		t.Fatalf("copy outputs = %v", out)
	}
	_, err := b.run(t, "file.copy", map[string]any{"from": "a.txt", "to": "b.txt"})
	wantBusiness(t, err, "already exists; set overwrite: true")
	b.mustRun(t, "file.copy", map[string]any{"from": "a.txt", "to": "b.txt", "overwrite": true})
	if data, _ := os.ReadFile(filepath.Join(b.work, "b.txt")); string(data) != "alpha" {
		t.Fatalf("b.txt = %q after overwrite", data)
	}
	out = b.mustRun(t, "file.copy", map[string]any{"from": "a.txt", "to": "box"})
	if out["path"] != filepath.Join(b.work, "box", "a.txt") {
		t.Fatalf("copy into a directory: %v", out)
	}
	_, err = b.run(t, "file.copy", map[string]any{"from": "a.txt", "to": filepath.Join(b.outside, "a.txt")})
	wantBusiness(t, err, "with.to: "+filepath.Join(b.outside, "a.txt")+" is outside")
	_, err = b.run(t, "file.copy", map[string]any{"from": "missing.txt", "to": "x.txt"})
	wantBusiness(t, err, "with.from: missing.txt does not exist")
	_, err = b.run(t, "file.copy", map[string]any{"from": "box", "to": "box2"})
	wantBusiness(t, err, "with.from: box is a directory")

	out = b.mustRun(t, "file.move", map[string]any{"from": "a.txt", "to": "moved/a.txt"})
	if _, err := os.Stat(filepath.Join(b.work, "a.txt")); !os.IsNotExist(err) {
		t.Fatalf("a.txt still there after move: %v", err)
	}
	if data, _ := os.ReadFile(out["path"].(string)); string(data) != "alpha" {
		t.Fatalf("moved file = %q", data)
	}
	_, err = b.run(t, "file.move", map[string]any{"from": "b.txt", "to": "moved/a.txt"})
	wantBusiness(t, err, "already exists")
	b.mustRun(t, "file.move", map[string]any{"from": "box", "to": "moved"})
	if _, err := os.Stat(filepath.Join(b.work, "moved", "box", "a.txt")); err != nil {
		t.Fatalf("directory not moved into moved/: %v", err)
	}
	_, err = b.run(t, "file.move", map[string]any{"from": ".", "to": "elsewhere"})
	wantBusiness(t, err, "is the job's work directory")
}

func TestDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, filepath.Join(b.work, "f.txt"), "x")
	writeFile(t, filepath.Join(b.work, "full", "inner.txt"), "x")
	writeFile(t, filepath.Join(b.outside, "keep.txt"), "keep")
	if err := os.Mkdir(filepath.Join(b.work, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b.outside, filepath.Join(b.work, "escape")); err != nil {
		t.Fatal(err)
	}

	if out := b.mustRun(t, "file.delete", map[string]any{"path": "f.txt"}); out["deleted"] != true {
		t.Fatalf("outputs = %v", out)
	}
	b.mustRun(t, "file.delete", map[string]any{"path": "empty"})
	_, err := b.run(t, "file.delete", map[string]any{"path": "full"})
	wantBusiness(t, err, "with.path: full is a directory that is not empty; set recursive: true")
	b.mustRun(t, "file.delete", map[string]any{"path": "full", "recursive": true})
	_, err = b.run(t, "file.delete", map[string]any{"path": "f.txt"})
	wantBusiness(t, err, "with.path: f.txt does not exist")
	if out := b.mustRun(t, "file.delete", map[string]any{"path": "f.txt", "missing_ok": true}); out["deleted"] != false {
		t.Fatalf("outputs = %v", out)
	}
	_, err = b.run(t, "file.delete", map[string]any{"path": "escape/keep.txt"})
	wantBusiness(t, err, "with.path: escape/keep.txt is outside")
	_, err = b.run(t, "file.delete", map[string]any{"path": ".", "recursive": true})
	wantBusiness(t, err, "with.path: . is the job's work directory")
	_, err = b.run(t, "file.delete", map[string]any{"path": "../outside", "recursive": true})
	wantBusiness(t, err, "is outside")

	// The link goes, what it points to stays.
	b.mustRun(t, "file.delete", map[string]any{"path": "escape", "recursive": true})
	if _, err := os.Lstat(filepath.Join(b.work, "escape")); !os.IsNotExist(err) {
		t.Fatalf("link still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.outside, "keep.txt")); err != nil {
		t.Fatalf("deleting the link removed its target: %v", err)
	}
}

func TestExists(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, filepath.Join(b.work, "dir", "f.txt"), "x")
	for _, tc := range []struct {
		path          string
		exists, isDir bool
	}{
		{"dir/f.txt", true, false},
		{"dir", true, true},
		{"nope", false, false},
		{"dir/f.txt/under", false, false},
	} {
		out := b.mustRun(t, "file.exists", map[string]any{"path": tc.path})
		if out["exists"] != tc.exists || out["is_dir"] != tc.isDir {
			t.Errorf("%s: outputs = %v", tc.path, out)
		}
	}
	_, err := b.run(t, "file.exists", map[string]any{"path": "/etc/passwd"})
	wantBusiness(t, err, "with.path: /etc/passwd is outside the job's work directory and the allowed roots")
}

func TestResolveFollowsLinksInsideTheRoots(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, filepath.Join(b.root, "data.txt"), "shared")
	if err := os.Symlink(filepath.Join(b.root, "data.txt"), filepath.Join(b.work, "data.txt")); err != nil {
		t.Fatal(err)
	}
	got, err := Resolve(b.env, "data.txt")
	if err != nil || got != filepath.Join(b.root, "data.txt") {
		t.Fatalf("Resolve = %q, %v", got, err)
	}
	loop := filepath.Join(b.work, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(b.env, "loop"); err == nil {
		t.Fatal("a link to itself resolved")
	}
	if _, err := Resolve(&step.Env{}, "x"); err == nil || step.IsBusiness(err) {
		t.Fatalf("no work directory: err = %v, want an application error", err)
	}
}
