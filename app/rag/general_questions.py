"""General questions: the base model's "domain" in auto routing.

A question goes to an adapter only when it is closer to that adapter's description or examples than to every
question here: questions of no domain in particular, in both languages (daily life, science, history, cooking,
health, general programming, writing). Comparing with them, instead of with a fixed similarity threshold,
cancels the embedder's own offsets (multilingual-e5 scores most pairs of questions between 0.75 and 0.9).
Written apart from the routing evaluation set in ``eval/routing``; adding topics here that an adapter covers
would route its questions to the base model.
"""

GENERAL_QUESTIONS: tuple[str, ...] = (
    "What's the weather like tomorrow?",
    "Recommend a good science fiction book.",
    "How many calories are in a banana?",
    "What year did World War II end?",
    "How do I tie a tie?",
    "What is the speed of light?",
    "Translate 'good morning' into French.",
    "How do I make pancakes?",
    "Who painted the Mona Lisa?",
    "What are the symptoms of the flu?",
    "How can I improve my sleep?",
    "What is machine learning?",
    "Write a short poem about autumn.",
    "How do I write a for loop in JavaScript?",
    "What is the population of Japan?",
    "How do vaccines work?",
    "Tips for a job interview?",
    "What's the difference between weather and climate?",
    "How do I change a flat tire?",
    "What is inflation?",
    "明天天气怎么样？",
    "推荐一部好看的电影。",
    "番茄炒蛋怎么做？",
    "长城有多长？",
    "如何学好数学？",
    "李白是哪个朝代的诗人？",
    "怎样减肥比较健康？",
    "什么是区块链？",
    "帮我写一首关于春天的诗。",
    "地球为什么是圆的？",
    "如何养好一盆绿萝？",
    "高血压要注意什么饮食？",
    "孩子不爱读书怎么办？",
    "怎么用 Excel 做数据透视表？",
    "黑洞是怎么形成的？",
    "去北京旅游有哪些景点？",
    "如何提高写作能力？",
    "猫为什么喜欢晒太阳？",
    "人工智能会取代人类工作吗？",
    "JavaScript 和 Java 有什么区别？",
)
