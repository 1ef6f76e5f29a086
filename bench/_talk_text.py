"""What the synthetic presenters of the benchmark talk say: distinct paragraphs, never repeated.

A talk about keeping a city's bridges, libraries and software running, told by a few presenters
with questions from the floor, so the transcript has the things selection looks for (questions
and answers, numbers, emphasis, changes of speaker) in ordinary proportions. About 2,400 words:
some 14 minutes of espeak-ng speech, more than a 10-minute talk needs beside the real recordings.
"""

from __future__ import annotations

# (speaker, text). Speakers map to espeak-ng voices in bench/_talk.py.
PARAGRAPHS: tuple[tuple[str, str], ...] = (
    ("host", "Good evening, everyone, and thank you for coming out on a wet Thursday. Tonight we are "
     "going to talk about maintenance: the boring, invisible work that keeps a city standing up. "
     "Nobody cuts a ribbon when a bridge gets repainted, and yet that paint is the reason the bridge "
     "is still there."),
    ("host", "Let me start with a number. Our city has four hundred and twelve bridges. Eleven of them "
     "are older than the railway. Every single one is inspected every two years, by a team of six "
     "people, and those six people have never once made the evening news."),
    ("guest", "So why does nobody notice them? I think it is because success in maintenance looks "
     "exactly like nothing happening. The water main does not burst, the lift keeps working, the "
     "trains arrive. You only see the work when it stops."),
    ("host", "That is the paradox we keep running into. The better the job is done, the easier it is "
     "to cut its budget. Three years ago a council committee asked me, quite seriously, why we were "
     "still paying for inspections when nothing had gone wrong."),
    ("audience", "Sorry to jump in, but what did you actually tell them?"),
    ("host", "I told them the truth. Nothing had gone wrong because we were paying for inspections. "
     "Then I showed them a photograph of a steel bearing we replaced in the spring. It had rusted "
     "almost all the way through. They funded us for another five years."),
    ("guest", "I want to talk about libraries for a moment, because they are the same story in a "
     "different building. A library is a machine for keeping things findable. The catalogue, the "
     "shelving rules, the repairs to old bindings: all of it is maintenance, and all of it is "
     "invisible until a book goes missing."),
    ("guest", "When I started, our branch had a card catalogue with ninety thousand cards. Somebody "
     "had typed every one of them. When we moved to a computer system, the hardest part was not the "
     "software. It was finding out which cards were wrong, and there were thousands."),
    ("third", "And this is where software people like me come in, usually too late and usually too "
     "confident. We arrive with a new system and assume the old one was simple. It never is. The "
     "old system has forty years of fixes inside it that nobody wrote down."),
    ("third", "Here is a rule I learned the hard way. Before you replace anything, find the person who "
     "has been quietly keeping it alive. Buy them lunch. Ask them what breaks on the last Friday of "
     "the month. They will tell you things that no document contains."),
    ("host", "Let us talk about money, because that is where maintenance usually loses the argument. "
     "Building something new comes out of a capital budget, with a launch and a photograph. Keeping it "
     "working comes out of an operating budget, which is the first thing trimmed in a bad year."),
    ("guest", "The economists have a phrase for this, deferred maintenance, which always sounds "
     "harmless. In practice it means borrowing from the future at a terrible interest rate. A roof "
     "repair that costs two thousand pounds this year costs forty thousand after the ceiling falls in."),
    ("audience", "Is there any city that actually gets this right, or is everyone failing in the same "
     "way?"),
    ("third", "A few get it right, and they have something in common. They publish the condition of "
     "their assets every year, in plain language, the way a company publishes its accounts. Once the "
     "numbers are public, neglect becomes visible, and visible neglect is much harder to vote for."),
    ("host", "One of my favourite examples is a small town in the north that put a sign on every bridge "
     "showing the date of its last inspection and its condition grade. Within two years the worst "
     "bridges had all been repaired, because people walked past those signs every day."),
    ("guest", "Now I want to tell you about a Tuesday in February. The heating in the central library "
     "failed at six in the morning. It was minus four outside. We had two thousand rare maps in the "
     "basement, and paper does not like sudden changes in temperature or humidity."),
    ("guest", "The engineer who came out had looked after that boiler for twenty two years. He did not "
     "need the manual. He listened to it for about thirty seconds, went straight to a valve behind a "
     "panel, and had it running before the first reader arrived. That is what expertise sounds like."),
    ("third", "In software we call that person the bus factor. If they are hit by a bus, or more "
     "likely if they retire, how much of the system goes with them? In most organisations I have "
     "worked with, the honest answer is far too much."),
    ("third", "The fix is not glamorous. You pair people up. You write down the weird things. You "
     "rotate who is on call, so that knowledge spreads instead of pooling in one head. None of it "
     "makes a good slide, but all of it makes a system that survives a retirement party."),
    ("audience", "How do you convince a manager to spend time on documentation when there is always "
     "something more urgent?"),
    ("third", "You measure what the lack of it costs. Count the hours spent asking the same questions. "
     "Count the incidents that took twice as long because the one person who knew was on holiday. "
     "Put a number on it, and suddenly an afternoon of writing looks very cheap."),
    ("host", "Let me come back to bridges with a story about paint. Steel bridges are painted not to "
     "look nice but to keep water and salt away from the metal. The paint system on our oldest iron "
     "bridge has seven layers, and the bottom one was applied in eighteen ninety."),
    ("host", "When we stripped a small test patch, we found the original red lead primer still "
     "doing its job after more than a century. The lesson is not that old things were better. The "
     "lesson is that old things which were looked after are still here to be admired."),
    ("guest", "There is a survivorship problem in how we remember the past. We see the beautiful old "
     "buildings and think everything used to be built to last. We do not see the thousands that fell "
     "down or were pulled down, because nobody kept them up."),
    ("third", "Software has exactly the same bias. People praise old programs that still run on "
     "mainframes. What they forget is the army of people who have patched, recompiled and nursed "
     "those programs for fifty years. The code is old. The care is new every morning."),
    ("audience", "What is the single biggest mistake you see organisations make with maintenance?"),
    ("host", "Treating it as a project instead of a habit. A project has an end date and a party. A "
     "habit is something you do every week whether or not anyone is watching. Bridges, books and "
     "software all need the habit, and they punish you quickly when you forget it."),
    ("guest", "I would add one more mistake: measuring the wrong thing. If you reward people for "
     "closing tickets, they close tickets. If you reward them for systems that stay healthy, they "
     "start fixing causes instead of symptoms. The numbers you choose shape the work you get."),
    ("third", "We ran an experiment on our team last year. For one quarter, every engineer spent "
     "Friday mornings on nothing but small repairs: flaky tests, confusing error messages, old "
     "warnings. Outages dropped by a third over the next six months. Nobody wrote a press release."),
    ("host", "Here is a question I get asked a lot: is maintenance work respected? Honestly, not "
     "enough. We hand out awards for new designs. I have never seen an award for the bridge that "
     "did not fall down, even though that is the more difficult thing to achieve."),
    ("guest", "Libraries have started to change that, a little. Some of us now publish the story of "
     "a repair: a torn atlas, a water damaged diary, a binding sewn again by hand. People love those "
     "stories. It turns out the public is fascinated by care, once you let them see it."),
    ("third", "That might be the most hopeful thing I can say tonight. Maintenance is not dull. It is "
     "hidden. When you show people the rusted bearing, the frozen boiler, the forgotten line of code "
     "that keeps the payroll running, they understand at once why it matters."),
    ("audience", "If you could change one rule tomorrow, what would it be?"),
    ("host", "I would make every new building, bridge or computer system come with a maintenance "
     "budget for its first twenty years, approved on the same day as the construction budget. If we "
     "cannot afford to keep it, we should be honest that we cannot afford to build it."),
    ("guest", "Mine would be smaller. I would give every library a permanent conservator, even a part "
     "time one. A single skilled person can save a collection that took three centuries to gather. "
     "Losing it takes one damp winter and nobody paying attention."),
    ("third", "And mine would be to delete one line of code for every ten we write. Software grows "
     "like a garden without a gardener. Every feature is a promise to maintain something forever, "
     "and most teams make far more promises than they can keep."),
    ("host", "Before we finish, a word about the people. The inspector who climbs under a bridge in "
     "January. The librarian who notices that a shelf is sagging. The engineer who fixes a test at "
     "midnight so the morning release can go out. They are the reason your city works."),
    ("guest", "So the next time you cross a river without thinking about it, or find the book you "
     "wanted exactly where it should be, or your bank's website simply loads, take a second to "
     "notice. Somebody made that boring, reliable moment happen on purpose."),
    ("third", "We have a few minutes for questions, and I promise we will not spend all of them "
     "talking about paint, although I could. Who would like to go first? Yes, at the back, by the "
     "window."),
    ("audience", "Thank you. Do you think automation and sensors will make maintenance cheaper, or "
     "will they just create more things that need maintaining?"),
    ("third", "Both, honestly. A sensor on a bridge cable can warn you years before a crack is "
     "visible, which is wonderful. But that sensor has a battery, a radio, firmware and a vendor "
     "that may not exist in ten years. You have bought an early warning and a new chore."),
    ("host", "The trick is to choose instruments that outlive their excitement. A simple strain gauge "
     "read once a month by a person with a clipboard has been more reliable for us than several "
     "clever systems that needed a subscription and stopped sending data when the company folded."),
    ("guest", "And please, whatever you install, write down how to turn it off and how to read it "
     "without the vendor's app. Twenty years from now, someone will thank you, probably without "
     "knowing your name. That is the whole job, really: being thanked by strangers you never meet."),
    ("host", "On that note, thank you all for listening, and thank you to the library for lending us "
     "the room, the chairs and the projector, all of which, I am told, were repaired this week. "
     "Good night, and mind the steps on the way out; we have reported them."),
)
