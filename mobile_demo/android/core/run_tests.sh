#!/usr/bin/env bash
# Compile the core and its JUnit 4 tests with plain javac and run them (no Gradle, no network):
#   bash mobile_demo/android/core/run_tests.sh
# Needs a JDK (>= 11) and Debian's junit4 + hamcrest jars (apt-get install openjdk-17-jdk-headless junit4).
set -euo pipefail
cd "$(dirname "$0")"
CP="/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
javac -encoding UTF-8 -Xlint:all -Werror -d "$OUT" -cp "$CP" $(find src/main/java src/test/java -name '*.java')
java -Dfixtures.dir=../../fixtures -cp "$OUT:$CP" org.junit.runner.JUnitCore \
  dev.edgeport.qa.TokenizerTest dev.edgeport.qa.FeatureConverterTest dev.edgeport.qa.AnswerDecoderTest \
  dev.edgeport.qa.QaEngineTest
