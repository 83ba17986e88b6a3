// The code version recorded with results (provenance): "<project version>+<git describe --dirty>".
#pragma once

const char* layerprune_version();
