// Tests for subjects and wildcard patterns of the topics service (the service's delivery is
// tested end to end in tests/python/test_topics.py).
#include "topics/topics.hpp"

#include <gtest/gtest.h>

namespace tether::topics {
namespace {

std::vector<std::string> segments(std::string_view subject) { return *split_subject(subject); }

bool matches(std::string_view pattern, std::string_view subject) { return pattern_matches(segments(pattern), segments(subject)); }

TEST(Subjects, SplitIntoNonEmptySegments) {
  EXPECT_EQ(segments("sensors.kitchen.temp"), (std::vector<std::string>{"sensors", "kitchen", "temp"}));
  EXPECT_EQ(segments("one"), std::vector<std::string>{"one"});
  EXPECT_FALSE(split_subject("").has_value());
  EXPECT_FALSE(split_subject("a..b").has_value());
  EXPECT_FALSE(split_subject(".a").has_value());
  EXPECT_FALSE(split_subject("a.").has_value());
}

TEST(Patterns, LiteralSegmentsMatchThemselvesOnly) {
  EXPECT_TRUE(matches("a.b", "a.b"));
  EXPECT_FALSE(matches("a.b", "a.c"));
  EXPECT_FALSE(matches("a.b", "a.b.c"));
  EXPECT_FALSE(matches("a.b.c", "a.b"));
}

TEST(Patterns, StarMatchesExactlyOneSegment) {
  EXPECT_TRUE(matches("sensors.*", "sensors.temp"));
  EXPECT_FALSE(matches("sensors.*", "sensors"));
  EXPECT_FALSE(matches("sensors.*", "sensors.kitchen.temp"));
  EXPECT_TRUE(matches("*.temp", "kitchen.temp"));
  EXPECT_TRUE(matches("a.*.c", "a.b.c"));
}

TEST(Patterns, HashMatchesAnyNumberOfSegmentsEvenNone) {
  EXPECT_TRUE(matches("sensors.#", "sensors"));
  EXPECT_TRUE(matches("sensors.#", "sensors.temp"));
  EXPECT_TRUE(matches("sensors.#", "sensors.kitchen.temp"));
  EXPECT_FALSE(matches("sensors.#", "actuators.valve"));
  EXPECT_TRUE(matches("#", "anything.at.all"));
  EXPECT_TRUE(matches("#.temp", "kitchen.oven.temp"));
  EXPECT_TRUE(matches("a.#.z", "a.z"));
  EXPECT_TRUE(matches("a.#.z", "a.b.c.z"));
  EXPECT_FALSE(matches("a.#.z", "a.b.c"));
  EXPECT_TRUE(matches("#.*", "x"));
  EXPECT_FALSE(matches("*.#.*", "x"));
}

}  // namespace
}  // namespace tether::topics
