// Command gen writes the files generated from the step definitions: the
// workflow JSON Schema for editors and the step catalogue in Markdown.
// Run it with go generate ./agent/step/library.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/casarerpa/casare/agent/step/library"
	"github.com/casarerpa/casare/agent/workflow"
)

func main() {
	schemaPath := flag.String("schema", "", "where to write the workflow JSON Schema")
	cataloguePath := flag.String("catalogue", "", "where to write the Markdown step catalogue")
	flag.Parse()
	cat := library.Catalogue(library.Config{})
	schema, err := workflow.Schema(cat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for path, data := range map[string][]byte{*schemaPath: schema, *cataloguePath: library.Markdown(cat)} {
		if path == "" {
			continue
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
