package files

import (
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/casarerpa/casare/agent/step"
)

type listParams struct {
	Pattern string `json:"pattern" doc:"Glob relative to dir, with / between directories: * and ? within a name, [a-z] classes, ** for any number of directories (reports/**/*.csv). Default *."`
	Dir     string `json:"dir" doc:"Directory to search and to which the results are relative. Default: the job's work directory."`
	Dirs    bool   `json:"dirs" doc:"List matching directories too; without it only files are listed."`
}

type listOutputs struct {
	Files []string `json:"files" doc:"Matching paths relative to dir, with / between directories, in lexical order."`
	Count int      `json:"count" doc:"How many paths matched."`
}

var listAction = step.Define("file.list", "Lists the files matching a glob pattern.",
	func(ctx context.Context, env *step.Env, p listParams) (listOutputs, error) {
		pattern := filepath.ToSlash(p.Pattern)
		if pattern == "" {
			pattern = "*"
		}
		segments, err := parsePattern(pattern)
		if err != nil {
			return listOutputs{}, err
		}
		dir := p.Dir
		if dir == "" {
			dir = "."
		}
		root, err := ResolveParam(env, "dir", dir)
		if err != nil {
			return listOutputs{}, err
		}
		if info, err := os.Stat(root); err != nil {
			return listOutputs{}, statProblem("dir", dir, err)
		} else if !info.IsDir() {
			return listOutputs{}, step.Businessf("with.dir: %s is a file, not a directory", dir)
		}
		out := listOutputs{Files: []string{}}
		err = filepath.WalkDir(root, func(name string, d fs.DirEntry, err error) error {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if name == root {
				return err
			}
			rel, _ := filepath.Rel(root, name)
			parts := strings.Split(filepath.ToSlash(rel), "/")
			if err != nil {
				// An unreadable directory is reported and skipped: the
				// rest of the tree is still worth listing.
				env.Logf("warn", "file.list: skipping %s: %v", rel, err)
				return nil
			}
			if matchSegments(segments, parts) && (p.Dirs || !d.IsDir()) {
				out.Files = append(out.Files, filepath.ToSlash(rel))
			}
			if d.IsDir() && !couldMatchBelow(segments, parts) {
				return filepath.SkipDir
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return listOutputs{}, ctx.Err()
			}
			return listOutputs{}, step.Failf("list %s: %w", dir, err)
		}
		out.Count = len(out.Files)
		return out, nil
	},
	step.Rejects("the pattern is malformed, absolute or climbs out with .."),
	step.Rejects("dir is outside the job's work directory and the allowed roots, or does not exist"),
	step.Fails("dir cannot be read"))

// parsePattern splits a slash-separated glob into its segments and checks
// each, so a malformed pattern is an error rather than an empty list.
func parsePattern(pattern string) ([]string, error) {
	if path.IsAbs(pattern) || filepath.IsAbs(pattern) {
		return nil, step.Businessf("with.pattern: %s is absolute; give the directory in dir and a relative pattern", pattern)
	}
	segments := strings.Split(path.Clean(pattern), "/")
	for _, s := range segments {
		if s == ".." {
			return nil, step.Businessf("with.pattern: %s climbs out of dir with ..; give the directory in dir instead", pattern)
		}
		if _, err := path.Match(s, ""); err != nil {
			return nil, step.Businessf("with.pattern: %s is not a valid glob: %v", pattern, err)
		}
	}
	return segments, nil
}

// matchSegments reports whether the path parts match the pattern segments,
// where a ** segment matches any number of parts, none included.
func matchSegments(pattern, parts []string) bool {
	for len(pattern) > 0 {
		if pattern[0] == "**" {
			for i := 0; i <= len(parts); i++ {
				if matchSegments(pattern[1:], parts[i:]) {
					return true
				}
			}
			return false
		}
		if len(parts) == 0 {
			return false
		}
		if ok, _ := path.Match(pattern[0], parts[0]); !ok {
			return false
		}
		pattern, parts = pattern[1:], parts[1:]
	}
	return len(parts) == 0
}

// couldMatchBelow reports whether anything inside the directory whose path
// parts are dir could match the pattern, so that the walk skips the
// directories that cannot.
func couldMatchBelow(pattern, dir []string) bool {
	for len(dir) > 0 {
		if len(pattern) == 0 {
			return false
		}
		if pattern[0] == "**" {
			return true
		}
		if ok, _ := path.Match(pattern[0], dir[0]); !ok {
			return false
		}
		pattern, dir = pattern[1:], dir[1:]
	}
	return len(pattern) > 0
}
