package app

import (
	"os"
	"regexp"
	"testing"

	"github.com/callbox/callbox/config"
)

// The TOML examples in docs/deploy.md are what people paste: each must
// load as it stands.
func TestDeployDocExamplesParse(t *testing.T) {
	data, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(data, -1)
	if len(blocks) == 0 {
		t.Fatal("no toml examples found")
	}
	for i, m := range blocks {
		if _, err := config.Parse(m[1]); err != nil {
			t.Errorf("example %d: %v\n%s", i+1, err, m[1])
		}
	}
}
