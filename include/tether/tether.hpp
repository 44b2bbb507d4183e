// tether's C++ API: one include for values, clients, servants and servers. See docs/cpp.md.
#pragma once

#include "tether/client.hpp"
#include "tether/cluster.hpp"
#include "tether/convert.hpp"
#include "tether/coordination.hpp"
#include "tether/error.hpp"
#include "tether/future.hpp"
#include "tether/security.hpp"
#include "tether/servant.hpp"
#include "tether/server.hpp"
#include "tether/value.hpp"
